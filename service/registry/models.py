"""Registry tables (DESIGN s5): versions and their components, tasks, modalities, aliases with
history, datasets, jobs and the prediction audit.

Versions are immutable and form a tree through `parent_id`. Tasks, modalities and components
belong to the version that introduced them; a version sees those of its whole lineage (itself and
its ancestors), so rolling back to an older version also rolls back which tasks exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.orm import Base, UTCDateTime, one_of, utcnow

VERSION_STATUSES = ("ready", "retired", "candidate")  # candidate: failed the promotion gate
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_JOB_STATES = ("succeeded", "failed", "cancelled")
MODALITY_KINDS = ("timeseries", "tabular", "text", "embedding", "image")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (CheckConstraint(one_of("status", VERSION_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # "v1", "v2", ...
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    digest: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of the canonical manifest
    # Ordered artifact files: [{"role", "name", "sha256", "size"}, ...]
    manifest: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def file(self, role: str) -> dict[str, Any]:
        """The manifest entry for `role`; KeyError names the roles that exist."""
        for entry in self.manifest:
            if entry["role"] == role:
                return entry
        raise KeyError(
            f"version {self.id} has no file with role {role!r}; roles: {[e['role'] for e in self.manifest]}"
        )


class Component(Base):
    """One stored weight of one stage: full base weights (rank None) or a rank-r factor pair."""

    __tablename__ = "components"
    __table_args__ = (
        UniqueConstraint("version_id", "stage", "weight"),
        CheckConstraint("rank IS NULL OR rank > 0", name="rank_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    stage: Mapped[int] = mapped_column(Integer)
    weight: Mapped[str] = mapped_column(String(256))
    rank: Mapped[int | None] = mapped_column(Integer)
    n_params: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))


class Modality(Base):
    __tablename__ = "modalities"
    __table_args__ = (
        UniqueConstraint("name", "version_id"),
        CheckConstraint(one_of("kind", MODALITY_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # ModalitySpec.to_dict()
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("name", "version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # TaskSpec.to_dict()
    cursor: Mapped[int] = mapped_column(Integer)  # the stage that introduced the task
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # at introduction
    model_card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The promotion gate's canaries (service.jobs.canaries): None for tasks registered without them.
    canary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Alias(Base):
    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AliasHistory(Base):
    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(64), index=True)
    from_version: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    to_version: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    moved_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    moved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    n_samples: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(one_of("state", JOB_STATES), name="state"),
        Index("ix_jobs_state_created_at", "state", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    parent_version: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    result_version: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    created_by: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far; the running one's number
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The lease (service.registry.leases): the running attempt touches heartbeat_at; a reaper re-queues
    # a running job whose heartbeat is older than the timeout. cancel_requested stops it at an epoch.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)


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
