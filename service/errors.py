"""One place that turns exceptions into HTTP: `{"error": {"code", "message", "field", ...}}`.

Domain code raises its own exceptions (registry `DomainError`s, flame_core's `SampleInvalid`) and
knows nothing of status codes; this module maps the classes. Messages never quote payload values
beyond what the validator puts in them (a field path and the offending scalar).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flame_core.specs import SpecError
from flame_core.validation import SampleInvalid
from flame_core.verify import CONFIG, WEIGHTS, CheckpointInvalid
from service.db import DB_UNAVAILABLE
from service.registry.errors import (
    ArtifactCorrupt,
    Conflict,
    DatasetUnsuitable,
    DomainError,
    NotFound,
    PermissionDenied,
)

log = logging.getLogger("flame.errors")


class Unauthenticated(DomainError):
    code = "unauthorized"


class BodyTooLarge(DomainError):
    code = "body_too_large"


class PayloadInvalid(DomainError):
    """A request that is well-formed JSON but breaks a service limit or shape (e.g. too many instances)."""

    code = "payload_invalid"


class PredictionNotFinite(DomainError):
    """The model produced a non-finite number for an input it accepted: never shown as a prediction."""

    code = "prediction_not_finite"


class ServiceUnavailable(DomainError):
    """Try again later (answered 503 with `Retry-After: retry_after`)."""

    code = "unavailable"

    def __init__(self, message: str, *, field: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class ModelNotReady(ServiceUnavailable):
    code = "model_not_ready"


class Overloaded(ServiceUnavailable):
    """The task's prediction queue is full (answered 429 with `Retry-After`): back off, then retry."""

    code = "overloaded"


class DeadlineExceeded(DomainError):
    """The request's deadline passed before its forward pass started; the work was dropped (504)."""

    code = "deadline_exceeded"


STATUS_OF: list[tuple[type[DomainError], int]] = [
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (BodyTooLarge, 413),
    (PayloadInvalid, 422),
    (DatasetUnsuitable, 422),
    (PredictionNotFinite, 422),
    (Overloaded, 429),
    (ServiceUnavailable, 503),
    (DeadlineExceeded, 504),
    (ArtifactCorrupt, 500),
]


def _status_of(exc: DomainError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status
    return 400


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = _status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, ServiceUnavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    body = error_body(exc.code, exc.message, exc.field, **exc.extra)
    return JSONResponse(body, status_code=status, headers=headers)


async def _spec_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return JSONResponse(error_body("spec_invalid", exc.message, exc.field), status_code=422)


# The form fields of `POST /models` that carry each checkpoint file.
UPLOAD_FIELD = {CONFIG: "config", WEIGHTS: "weights"}


async def _checkpoint_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CheckpointInvalid)
    upload = UPLOAD_FIELD.get(exc.file, exc.file)
    inner = exc.field if exc.field not in (None, exc.file, "weights", "directory") else None
    field = f"{upload}.{inner}" if inner else upload
    body = error_body("checkpoint_invalid", str(exc), field, file=exc.file)
    return JSONResponse(body, status_code=422)


async def _sample_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SampleInvalid)
    body = error_body(
        "sample_invalid", str(exc), exc.field, instance=exc.sample, task=exc.task, modality=exc.modality
    )
    return JSONResponse(body, status_code=422)


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = first.get("msg", "invalid request")
    details = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")} for e in errors]
    return JSONResponse(error_body("request_invalid", message, field, details=details[:20]), status_code=422)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, broken multipart)
        message = f"the request body cannot be read: {exc.detail}"
        return JSONResponse(error_body(PayloadInvalid.code, message, "body"), status_code=422)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(exc.detail), None), status_code=exc.status_code, headers=exc.headers
    )


def internal_error() -> JSONResponse:
    """The answer to a bug: no detail, and `Connection: close` so the client's next request opens a
    fresh connection instead of failing on one the server drops."""
    body = error_body("internal", "internal server error", None)
    return JSONResponse(body, status_code=500, headers={"Connection": "close"})


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    body = error_body("database_unavailable", "the database is unavailable; retry later", None)
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"request_id": getattr(request.state, "request_id", None)},
    )
    return internal_error()


def install_error_handlers(app: FastAPI) -> None:
    """Every domain error to its status, in one place (an unexpected error is caught even earlier, by
    `ObservabilityMiddleware`, which answers `internal_error()`)."""
    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(SampleInvalid, _sample_invalid)
    app.add_exception_handler(SpecError, _spec_invalid)
    app.add_exception_handler(CheckpointInvalid, _checkpoint_invalid)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    for db_error in DB_UNAVAILABLE:
        app.add_exception_handler(db_error, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)


class BodySizeLimitMiddleware:
    """413 for a body over `max_bytes`: at once from Content-Length, else while the body streams in
    (the read raises BodyTooLarge inside the app, where the handler above answers)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        dataset_max_bytes: int | None = None,
        model_max_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.default_max = max_bytes
        self.dataset_max = dataset_max_bytes or max_bytes  # dataset uploads are JSONL files, not requests
        self.model_max = model_max_bytes or max_bytes  # `POST /models` uploads a checkpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.dataset_max if path.startswith("/datasets") else self.default_max
        if path == "/models":
            limit = self.model_max
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            msg = f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes"
            response = JSONResponse(error_body(BodyTooLarge.code, msg, "body"), status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes", field="body")
            return message

        await self.app(scope, limited_receive, send)
