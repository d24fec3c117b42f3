"""Pydantic shapes at the edge of the jobs API (requests and responses); ORM rows stay inside."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StageDatasets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: str
    validation: str
    test: str | None = None  # metrics after truncation are on test, else on validation


MetricName = Literal["auroc", "auprc", "f1", "accuracy", "mse"]
# What `flame_core.metrics.task_metrics` reports per head type (min_metric may only name these).
HEAD_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auroc", "auprc", "f1", "accuracy"),
    "multiclass": ("auroc", "auprc", "f1", "accuracy"),
    "multilabel": ("auroc", "auprc", "f1", "accuracy"),
    "regression": ("mse",),
}


class StageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=10, ge=1, le=1000)
    rank: int | Literal["auto"] = "auto"
    energy: float = Field(default=0.99, gt=0.0, le=1.0)
    refit_epochs: int = Field(default=3, ge=0, le=100)  # refit the truncated factors and heads
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # what torch and numpy seed with
    activate: bool = True
    batch_size: int = Field(default=64, ge=1, le=4096)
    lr: float = Field(default=2e-3, gt=0.0, le=1.0)
    patience: int = Field(default=5, ge=0)
    # the conformal sets' target coverage for the new tasks (fixed with them, like their weights)
    coverage: float = Field(default=0.9, gt=0.5, lt=1.0)
    # The promotion gate: every new task must reach each bound on the job's metrics (test split, else
    # validation); `mse` is a maximum. Short of it the version stays `candidate`.
    min_metric: dict[MetricName, Annotated[float, Field(allow_inf_nan=False)]] | None = None

    @field_validator("rank")
    @classmethod
    def _positive_rank(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"rank must be >= 1 or 'auto', got {value}")
        return value


class StageRequest(BaseModel):
    """`POST /tasks`: a task-spec file (docs/design.md s2) plus the datasets and options of the stage."""

    model_config = ConfigDict(extra="forbid")

    modalities: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tasks: list[dict[str, Any]] = Field(min_length=1)
    datasets: StageDatasets
    options: StageOptions = Field(default_factory=StageOptions)

    def spec_dict(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "tasks": self.tasks}


class JobAccepted(BaseModel):
    job_id: str
    state: str


class JobOut(BaseModel):
    job_id: str
    kind: str
    state: str
    progress: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    parent_version: str | None
    result_version: str | None
    attempts: int
    cancel_requested: bool
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    # The promotion gate's report once the job succeeded: promoted, status, reason, checked, unchecked.
    promotion: dict[str, Any] | None = None


class JobPage(BaseModel):
    """`GET /jobs`: newest first; the next page starts at `next_offset` (null on the last page)."""

    jobs: list[JobOut]
    limit: int
    offset: int
    next_offset: int | None


STAGE_EXAMPLES: dict[str, dict[str, Any]] = {
    "new_task": {
        "summary": "teach the model a new task from two uploaded datasets",
        "value": {
            "tasks": [{"name": "readmission", "modalities": ["labs", "cxr"], "head": {"type": "binary"}}],
            "datasets": {
                "train": "7d0c6a4e-2f49-4b8e-9d55-1f3f0f6f1a01",
                "validation": "0b9e8f1c-93a4-4e11-8d0e-5d7c2b4c3a02",
            },
            "options": {"epochs": 10, "rank": "auto", "energy": 0.99},
        },
    },
    "new_modality": {
        "summary": "a task on a new modality, declared with it",
        "value": {
            "modalities": {"ecg": {"kind": "embedding", "dim": 16}},
            "tasks": [
                {"name": "arrhythmia_ecg", "modalities": ["ecg", "vitals"], "head": {"type": "binary"}}
            ],
            "datasets": {
                "train": "7d0c6a4e-2f49-4b8e-9d55-1f3f0f6f1a01",
                "validation": "0b9e8f1c-93a4-4e11-8d0e-5d7c2b4c3a02",
            },
        },
    },
}
