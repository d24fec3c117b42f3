"""The prediction audit trail: who asked which task of which version, with which modalities.

Rows never hold payloads or outputs (no PHI in the registry); a request id links a row to logs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.inference.models import PredictionAudit
from service.orm import utcnow


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction's audit row before it is inserted (it may wait in a spool file first).
    `(request_id, created_at)` identifies it, so a replayed record is never inserted twice."""

    request_id: str
    task: str
    version: str
    modalities_present: tuple[str, ...]
    latency_ms: float
    status_code: int
    caller_key_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if not self.request_id or len(self.request_id) > 64:
            raise ValueError(f"request_id must be 1-64 characters, got {self.request_id!r}")
        if not 1 <= len(self.task) <= 64 or not 1 <= len(self.version) <= 32:
            raise ValueError(
                f"task (1-64) or version (1-32 characters) out of range: {self.task!r}, {self.version!r}"
            )
        if not math.isfinite(self.latency_ms) or self.latency_ms < 0:
            raise ValueError(f"latency_ms must be finite and >= 0, got {self.latency_ms}")
        if self.created_at.tzinfo is None:
            raise ValueError(f"created_at must be timezone-aware, got {self.created_at!r}")
        object.__setattr__(self, "modalities_present", tuple(sorted(self.modalities_present)))

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "modalities_present": list(self.modalities_present),
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictionRecord:
        return cls(
            **{
                **data,
                "modalities_present": tuple(data["modalities_present"]),
                "created_at": datetime.fromisoformat(data["created_at"]),
            }
        )


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


def record_predictions(*, session: Session, records: Sequence[PredictionRecord]) -> int:
    """Insert a batch of audit rows, skipping any already stored (same request id and time: a spool
    replayed again after a crash); returns how many were inserted."""
    ids = {r.request_id for r in records}
    seen: set[tuple[str, datetime]] = set()
    if ids:
        query = select(PredictionAudit.request_id, PredictionAudit.created_at).where(
            PredictionAudit.request_id.in_(ids)
        )
        seen = {(rid, at) for rid, at in session.execute(query)}
    rows = []
    for r in records:
        if (r.request_id, r.created_at) in seen:
            continue
        seen.add((r.request_id, r.created_at))
        rows.append(
            PredictionAudit(
                request_id=r.request_id,
                task=r.task,
                version=r.version,
                modalities_present=list(r.modalities_present),
                latency_ms=float(r.latency_ms),
                status_code=int(r.status_code),
                caller_key_id=r.caller_key_id,
                created_at=r.created_at,
            )
        )
    session.add_all(rows)
    session.flush()
    return len(rows)


def list_predictions(*, session: Session, task: str | None = None, limit: int = 100) -> list[PredictionAudit]:
    """Newest audit rows first, optionally for one task."""
    query = select(PredictionAudit).order_by(PredictionAudit.created_at.desc(), PredictionAudit.id.desc())
    if task is not None:
        query = query.where(PredictionAudit.task == task)
    return list(session.scalars(query.limit(limit)))
