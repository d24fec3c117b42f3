"""The prediction_audit table: who asked what of which version, never the payload or output."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.orm import Base, UTCDateTime, utcnow


class PredictionAudit(Base):
    """Who asked what of which version, and how it went. Never the payload or the output."""

    __tablename__ = "prediction_audit"
    __table_args__ = (Index("ix_prediction_audit_task_created_at", "task", "created_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))  # no FK: audit inserts stay cheap and independent
    modalities_present: Mapped[list[str]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int] = mapped_column(Integer)
    caller_key_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
