"""Limits on the shape of a request, applied before any domain code reads it.

- `parse_json`: the prediction body as JSON with bounded integer literals and nesting (a 5,000-digit
  integer or a 2,000-deep array is a 422 naming `body`, never a 500 from the parser). Array lengths
  need no separate bound here: the body-size limit caps the whole document, and validation checks
  each array's length (instances, time steps, dims) before it walks the elements.
- `ContentTypeMiddleware`: a request body that is not JSON is a 415 on every JSON route (the upload
  routes `POST /datasets` and `POST /models` excepted), instead of a confusing 422 about its shape.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import PayloadInvalid, error_body

MAX_INT_DIGITS = 32  # an integer literal longer than this is no clinical value (floats are unbounded text)
UPLOAD_PATHS = frozenset({"/datasets", "/models"})  # POST bodies that are uploads, not JSON documents
_JSON_TYPES = ("application/json",)


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise PayloadInvalid(
            f"an integer literal has {len(literal)} digits; the limit is {MAX_INT_DIGITS}", field="body"
        )
    return int(literal)


def parse_json(raw: bytes) -> Any:
    """The body as JSON; NaN/Infinity tokens parse to floats on purpose, so that validation names the
    exact field that holds them."""
    try:
        return json.loads(raw, parse_int=_bounded_int)
    except RecursionError:
        raise PayloadInvalid("request body is nested too deeply to be a sample", field="body") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadInvalid(f"request body is not valid JSON: {e}", field="body") from None


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


class ContentTypeMiddleware:
    """415 for a body sent as anything but JSON (no Content-Type is read as JSON)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers") or [])
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
            upload = scope.get("path", "").rstrip("/") in UPLOAD_PATHS  # exact: /models/{v}/activate is JSON
            if has_body and content_type and not is_json(content_type) and not upload:
                media = content_type.split(";", 1)[0].strip()[:64]
                body = error_body(
                    "unsupported_media_type",
                    f"the body must be application/json, got {media!r}",
                    "content-type",
                )
                await JSONResponse(body, status_code=415)(scope, receive, send)
                return
        await self.app(scope, receive, send)
