"""The OpenAPI document is the contract (docs/design.md s6): every schema resolves, every status code a
route can answer is documented with the body it has, and the routes that need a key say so.

Routes declare their own outcomes (`responses=errors(404, 409)`) and non-pydantic bodies
(`openapi_extra=request_body(...)`); `install_openapi(app)` post-processes FastAPI's document once and
caches it: our error body replaces FastAPI's default 422 everywhere, an operation that needs a key
documents 401, 403 and 503 (its database may be down), one with a body 413 (and 415 if the body is
JSON), every one 500, and the schemas that request bodies refer
to are hoisted into `components`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

REF = "#/components/schemas/{model}"
_DEFS_KEY = "x-flame-defs"  # a request body's own schema definitions, moved to components


class FieldError(BaseModel):
    field: str = Field(description="dotted location, e.g. `body.options.epochs` or `query.version`")
    message: str


class ErrorInfo(BaseModel):
    """`code` is stable and machine-readable; `message` is for people. Some codes add context:
    `sample_invalid` adds `instance`, `task` and `modality`; `dataset_invalid` adds `line`;
    `request_invalid` adds `details`."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["sample_invalid", "task_not_found", "unauthorized"])
    message: str
    field: str | None = Field(
        description="the offending input as a dotted path, e.g. `modalities.labs.values[3]`"
    )
    instance: int | str | None = Field(
        default=None, description="sample_invalid: the index in `instances`, or the sample's id"
    )
    task: str | None = None
    modality: str | None = None
    line: int | None = Field(default=None, description="dataset_invalid: the 1-based line of the JSONL file")
    details: list[FieldError] | None = Field(default=None, description="request_invalid: up to 20 errors")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API (docs/design.md s6)."""

    error: ErrorInfo


_ERROR_DOC: dict[int, str] = {
    401: "No valid API key: send `Authorization: Bearer <token>` (code `unauthorized`).",
    403: "The API key lacks the scope this route needs (code `forbidden`).",
    404: "Not found.",
    409: "Clashes with stored state.",
    413: "The request body is over the size limit (code `body_too_large`).",
    415: "The body is not `application/json` (code `unsupported_media_type`).",
    422: (
        "The request is invalid; `field` names the offending input (codes `request_invalid`, "
        "`payload_invalid` (also a body that cannot be read: not UTF-8, a broken multipart form), "
        "`sample_invalid`, `dataset_invalid`, `spec_invalid`)."
    ),
    429: "Too many requests are queued; retry after `Retry-After` seconds.",
    500: "An unexpected error (code `internal`); it is logged with the request id.",
    503: (
        "Not ready, the queue is full, or the database is unreachable (code `database_unavailable`); "
        "retry after `Retry-After` seconds."
    ),
    504: "The request's deadline passed before it was computed (code `deadline_exceeded`).",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True, "description": "`Bearer`"}},
    429: {"Retry-After": {"schema": {"type": "string"}, "required": True, "description": "seconds"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "required": True, "description": "seconds"}},
}
_ERROR_REF = {"$ref": REF.format(model="ErrorBody")}


def errors(*codes: int, notes: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each code answers an `ErrorBody`; `notes` says why, per code."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        doc: dict[str, Any] = {"model": ErrorBody, "description": (notes or {}).get(code, _ERROR_DOC[code])}
        if code in _HEADERS:
            doc["headers"] = _HEADERS[code]
        out[code] = doc
    return out


def request_body(
    content: dict[str, tuple[Any, dict[str, Any]]], *, required: bool = True, description: str = ""
) -> dict[str, Any]:
    """`openapi_extra` for a body the route reads itself: media type -> (type, named examples).

    The schema comes from pydantic (`TypeAdapter(type)`); its definitions travel with the operation
    until `install_openapi` moves them into `components`.
    """
    media: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for media_type, (type_, examples) in content.items():
        schema = TypeAdapter(type_).json_schema(ref_template=REF)
        defs.update(schema.pop("$defs", {}))
        media[media_type] = {"schema": schema, "examples": examples}
    body = {"required": required, "content": media, **({"description": description} if description else {})}
    return {"requestBody": body, _DEFS_KEY: defs}


def _error_response(code: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "description": _ERROR_DOC[code],
        "content": {"application/json": {"schema": dict(_ERROR_REF)}},
    }
    if code in _HEADERS:
        doc["headers"] = _HEADERS[code]
    return doc


def _is_fastapi_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")


def _hoist(schemas: dict[str, Any], defs: dict[str, Any]) -> None:
    for name, schema in defs.items():
        if name in schemas and schemas[name] != schema:
            raise ValueError(f"two different schemas are named {name!r} in the OpenAPI document")
        schemas[name] = schema


def finish_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Post-process FastAPI's document in place (see the module docstring); returns it."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template=REF, mode="serialization")
    for name, schema in {**error_schema.pop("$defs"), "ErrorBody": error_schema}.items():
        schemas.setdefault(name, schema)  # FastAPI's copy, where a route's `responses` named it
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            _hoist(schemas, operation.pop(_DEFS_KEY, {}))
            responses = operation.setdefault("responses", {})
            if "422" in responses and _is_fastapi_422(responses["422"]):
                responses["422"] = _error_response(422)
            needed = [500]
            if operation.get("security"):  # the key is checked against the registry (or its cache)
                needed += [401, 403, 503]
            if "requestBody" in operation:
                needed += [413]
                if "application/json" in operation["requestBody"].get("content", {}):
                    needed += [415]
            for code in needed:
                responses.setdefault(str(code), _error_response(code))
            operation["responses"] = dict(sorted(responses.items()))
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the finished document at /openapi.json (built on first use, then cached on the app)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_document(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
