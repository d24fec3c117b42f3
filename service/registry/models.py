"""Registry tables (docs/design.md s5): versions and their components, tasks, modalities, and aliases with
their history. Datasets, jobs and the prediction audit have their own areas' `models.py`.

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
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.orm import Base, UTCDateTime, one_of, utcnow

VERSION_STATUSES = ("ready", "retired", "candidate")  # candidate: failed the promotion gate
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
