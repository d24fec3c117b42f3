"""Looking up versions and walking their lineage (a version sees what its ancestors introduced)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.registry.errors import Conflict, VersionNotFound
from service.registry.models import ModelVersion


def get_version(*, session: Session, version: str) -> ModelVersion:
    row = session.get(ModelVersion, version)
    if row is None:
        raise VersionNotFound(f"model version {version!r} not found", field="version")
    return row


def list_versions(*, session: Session) -> list[ModelVersion]:
    """All versions, oldest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.id)))


def lineage(*, session: Session, version: str) -> list[ModelVersion]:
    """The version and its ancestors, root first."""
    chain: list[ModelVersion] = []
    seen: set[str] = set()
    current: str | None = version
    while current is not None:
        if current in seen:
            raise Conflict(f"version lineage of {version!r} has a cycle at {current!r}")
        seen.add(current)
        row = get_version(session=session, version=current)
        chain.append(row)
        current = row.parent_id
    return chain[::-1]


def lineage_ids(*, session: Session, version: str | None) -> list[str]:
    return [] if version is None else [v.id for v in lineage(session=session, version=version)]
