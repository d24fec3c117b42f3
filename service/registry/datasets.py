"""Datasets: content-addressed JSONL uploads, validated and summarised before they get here."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.artifacts import ArtifactStore, check_digest
from service.datasets.models import Dataset
from service.registry.errors import DatasetNotFound


def get_dataset(*, session: Session, dataset_id: str) -> Dataset:
    row = session.get(Dataset, dataset_id)
    if row is None:
        raise DatasetNotFound(f"dataset {dataset_id!r} not found", field="dataset_id")
    return row


def find_dataset(*, session: Session, digest: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.digest == digest)).one_or_none()


def list_datasets(*, session: Session, limit: int = 100) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id).limit(limit)))


def create_dataset(
    *,
    session: Session,
    store: ArtifactStore,
    name: str,
    content: bytes | str | os.PathLike[str],
    n_samples: int,
    summary: dict[str, Any] | None = None,
    digest: str | None = None,
    created_by: str | None = None,
) -> Dataset:
    """Store a validated dataset; the same content (same digest) returns the dataset already stored.

    `digest` defaults to the sha256 of the stored bytes; pass a digest of normalised samples to
    also deduplicate re-serialised copies of the same data.
    """
    if not name or len(name) > 256:
        raise ValueError(f"dataset name must be 1-256 characters, got {name!r}")
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    if isinstance(content, bytes | bytearray):
        sha, size = store.put_bytes(bytes(content)), len(content)
    else:
        sha, size = store.put_file(content), Path(content).stat().st_size
    key = check_digest(digest) if digest is not None else sha
    existing = find_dataset(session=session, digest=key)
    if existing is not None:
        return existing
    row = Dataset(
        id=str(uuid.uuid4()),
        digest=key,
        name=name,
        n_samples=n_samples,
        summary=dict(summary or {}),
        artifact_sha256=sha,
        size=size,
        created_by=created_by,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = find_dataset(session=session, digest=key)  # a concurrent upload of the same content
        if existing is None:
            raise
        return existing
    return row
