"""Pydantic shapes of `POST /predict/{task}` at the edge (for OpenAPI and response checking).

The request body is read as plain JSON and checked by `flame_core.validation` (which names the
exact field path of a bad value); the model below documents it for clients.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Sample(BaseModel):
    """One sample in the DESIGN s2 JSON format; labels, if sent, are checked and ignored."""

    id: str | int | None = None
    modalities: dict[str, Any] = Field(description="modality name -> payload (timeseries, tabular, ...)")


class PredictBatch(BaseModel):
    instances: list[Sample] = Field(description="up to FLAME_MAX_INSTANCES samples")


class Output(BaseModel):
    """Head-specific fields: binary `probability`+`label`; multiclass `probabilities`+`label`
    (+`class_name`); multilabel `probabilities` (name -> p) + `labels` (names with p >= 0.5);
    regression `value`."""

    type: Literal["binary", "multiclass", "multilabel", "regression"]
    probability: float | None = None
    probabilities: list[float] | dict[str, float] | None = None
    label: int | None = None
    class_name: str | None = None
    labels: list[str] | None = None
    value: float | None = None


class ModalityUse(BaseModel):
    used: list[str] = Field(description="task modalities that were present and encoded")
    missing: list[str] = Field(
        description="task modalities absent (the head used its learned 'missing' vector)"
    )
    ignored: list[str] = Field(description="modalities sent that this task does not read")


class Route(BaseModel):
    experts: list[int]
    weights: list[float]


class OutOfRange(BaseModel):
    """A value inside the accepted bound but outside what the model saw in training for this task."""

    field: str = Field(description="dotted path of the value, e.g. modalities.labs.values[3]")
    low: float | None = Field(description="smallest training value of the feature (null: never observed)")
    high: float | None = Field(description="largest training value of the feature (null: never observed)")


class Prediction(BaseModel):
    id: str | None
    output: Output
    modalities: ModalityUse
    routing: dict[str, Route] = Field(description="per used modality: top-k experts and gate weights")
    out_of_training_range: list[OutOfRange] = Field(
        default_factory=list,
        description="inputs outside the task's training range (the prediction extrapolates); at most 32",
    )


class PredictResponse(BaseModel):
    request_id: str
    task: str
    model_version: str
    cursor: int = Field(description="the continual stage whose weights serve this task")
    predictions: list[Prediction]
