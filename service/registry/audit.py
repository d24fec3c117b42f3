"""The prediction audit trail: who asked which task of which version, with which modalities.

Rows never hold payloads or outputs (no PHI in the registry); a request id links a row to logs.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.registry.models import PredictionAudit


def record_prediction(
    *,
    session: Session,
    request_id: str,
    task: str,
    version: str,
    modalities_present: Sequence[str],
    latency_ms: float,
    status_code: int,
    caller_key_id: str | None = None,
) -> PredictionAudit:
    """One audit row per prediction request: who, which task and version, which modalities, how long."""
    if not request_id or len(request_id) > 64:
        raise ValueError(f"request_id must be 1-64 characters, got {request_id!r}")
    if latency_ms < 0:
        raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
    row = PredictionAudit(
        request_id=request_id,
        task=task,
        version=version,
        modalities_present=sorted(modalities_present),
        latency_ms=float(latency_ms),
        status_code=int(status_code),
        caller_key_id=caller_key_id,
    )
    session.add(row)
    session.flush()
    return row


def list_predictions(*, session: Session, task: str | None = None, limit: int = 100) -> list[PredictionAudit]:
    """Newest audit rows first, optionally for one task."""
    query = select(PredictionAudit).order_by(PredictionAudit.created_at.desc(), PredictionAudit.id.desc())
    if task is not None:
        query = query.where(PredictionAudit.task == task)
    return list(session.scalars(query.limit(limit)))
