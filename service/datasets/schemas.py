"""Pydantic shapes of the datasets API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class DatasetOut(BaseModel):
    """`summary`: {"n_samples", "tasks": {task: {"labelled", "balance"}}, "modalities": {name: count},
    "specs": the inline specs it was validated with, or null}."""

    dataset_id: str
    name: str
    digest: str
    n_samples: int
    size: int
    summary: dict[str, Any]
    created_by: str | None
    created_at: datetime
