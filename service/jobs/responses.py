"""Error bodies the jobs and datasets routes answer themselves (DESIGN s6 shape)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """`{"error": {"code", "message", "field", ...extra}}` with `status`."""
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "field": field, **extra}},
        headers=headers,
    )
