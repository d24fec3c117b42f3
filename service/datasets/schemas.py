"""Pydantic shapes of the datasets API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

NAME_MAX = 256


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


class DatasetUpload(BaseModel):
    """`POST /datasets` as `multipart/form-data` (documentation: the route reads the form itself)."""

    file: bytes = Field(description="the JSON Lines file, one sample per line")
    name: str | None = Field(default=None, max_length=NAME_MAX, description="default: the file's name")
    specs: str | None = Field(
        default=None, description="task-spec JSON to validate labels against (merged with the active model's)"
    )


_LABS = [0.1, -0.2, 0.3, None, 0.0, 1.1, 0.4, -0.5, 0.2, 0.1, 0.0, 0.3]
_LINES = [
    {"id": "p1", "modalities": {"labs": {"values": _LABS}}, "labels": {"readmission": 1}},
    {"id": "p2", "modalities": {"labs": {"values": _LABS[::-1]}}, "labels": {"readmission": 0}},
]
EXAMPLE_JSONL = "\n".join(json.dumps(line) for line in _LINES) + "\n"
EXAMPLE_SPECS = json.dumps(
    {"tasks": [{"name": "readmission", "modalities": ["labs", "cxr"], "head": {"type": "binary"}}]}
)
UPLOAD_EXAMPLES: dict[str, dict[str, Any]] = {
    "application/x-ndjson": {"jsonl": {"summary": "the JSONL as the raw body", "value": EXAMPLE_JSONL}},
    "multipart/form-data": {
        "file": {
            "summary": "a file upload, with the specs of a task the active model does not have yet",
            "value": {"file": EXAMPLE_JSONL, "name": "readmission-train", "specs": EXAMPLE_SPECS},
        }
    },
}
