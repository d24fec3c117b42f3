"""Pydantic shapes of `POST /predict/{task}` at the edge (for OpenAPI and response checking).

The request body is read as plain JSON and checked by `flame_core.validation` (which names the
exact field path of a bad value); the request models below document it for clients and fuzzers.
Response models promise exactly what is returned: every field is always present (`null` only where
the type says so).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Number = float | None


class TimeseriesPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", title="timeseries")

    times: list[float] = Field(description="hours, non-decreasing, one per row of `values`")
    values: list[list[Number]] = Field(description="T x D values; `null` marks a missing value")


class TabularPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", title="tabular")

    values: list[Number] = Field(description="D values; `null` marks a missing value")


class TextPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", title="text")

    text: str


class EmbeddingPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", title="embedding")

    embedding: list[float] = Field(description="one D-vector")


class EmbeddingSeriesPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", title="embeddings")

    embeddings: list[list[float]] = Field(description="N x D vectors")
    times: list[float] | None = Field(default=None, description="hours, one per vector (default all 0)")


class ImagePayload(BaseModel):
    model_config = ConfigDict(extra="forbid", title="image")

    pixels: list[list[float]] | list[list[list[float]]] = Field(description="H x W or C x H x W")


ModalityPayload = (
    TimeseriesPayload
    | TabularPayload
    | TextPayload
    | EmbeddingPayload
    | EmbeddingSeriesPayload
    | ImagePayload
)
Label = int | float | str | list[int] | None


class Sample(BaseModel):
    """One sample in the docs/design.md s2 format. Any of the task's modalities may be absent (at least one
    is needed); modalities the task does not read are reported as `ignored`. Labels, if sent, are
    checked and ignored."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(default=None, description="echoed back (as a string) in the prediction")
    modalities: dict[str, ModalityPayload] = Field(
        description="modality name -> payload; the payload's kind is the modality's (see GET /tasks)"
    )
    label: Label = None
    labels: dict[str, Label] | None = None


class PredictBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Sample] = Field(min_length=1, description="up to FLAME_MAX_INSTANCES samples")


class _Out(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class BinaryOutput(_Out):
    type: Literal["binary"]
    probability: float
    label: int = Field(description="1 when probability >= 0.5")
    class_name: str | None = Field(default=None, description="the head's name for `label`, if it has names")


class MulticlassOutput(_Out):
    type: Literal["multiclass"]
    probabilities: list[float]
    label: int = Field(description="the most probable class")
    class_name: str | None = Field(default=None, description="the head's name for `label`, if it has names")


class MultilabelOutput(_Out):
    type: Literal["multilabel"]
    probabilities: dict[str, float] = Field(description="label name -> probability")
    labels: list[str] = Field(description="names with probability >= 0.5")


class RegressionOutput(_Out):
    type: Literal["regression"]
    value: float


Output = Annotated[
    BinaryOutput | MulticlassOutput | MultilabelOutput | RegressionOutput, Field(discriminator="type")
]


class ModalityUse(BaseModel):
    used: list[str] = Field(description="task modalities that were present and encoded")
    missing: list[str] = Field(
        description="task modalities absent (the head used its learned 'missing' vector)"
    )
    ignored: list[str] = Field(description="modalities sent that this task does not read")


class Route(BaseModel):
    experts: list[int]
    weights: list[float]


class OutOfTrainingRange(BaseModel):
    """A value inside the accepted bounds but outside what the model saw in training."""

    field: str = Field(examples=["modalities.labs.values[3]"])
    low: float | None = Field(
        description="the lowest value of this feature in training (null: never observed)"
    )
    high: float | None = Field(
        description="the highest value of this feature in training (null: never observed)"
    )


class Calibrated(_Out):
    """The calibrated output and its split-conformal prediction set (docs/design.md: calibration)."""

    output: Output = Field(description="the output after the task's temperature scaling")
    coverage: float = Field(description="the set's target coverage, e.g. 0.9")
    set: list[str] | None = Field(
        description="binary and multiclass: the labels (class names, else indices) the set keeps"
    )
    labels: dict[str, Literal["yes", "no", "uncertain"]] | None = Field(
        description="multilabel: each label's decision at the coverage"
    )
    interval: list[float] | None = Field(description="regression: [low, high] at the coverage")


class Shift(_Out):
    """How far this patient's inputs are from the task's training data (routers' pooled summaries)."""

    score: float = Field(description="mean squared Mahalanobis distance per dimension over modalities")
    threshold: float = Field(description="the score at the task's training quantile (e.g. 0.99)")
    in_distribution: bool = Field(description="score <= threshold")


class Prediction(_Out):
    id: str | None = Field(description="the sample's id, or null if it had none")
    output: Output
    calibrated: Calibrated | None = Field(
        description="null when the task was registered without calibration (no validation data)"
    )
    abstain: bool | None = Field(
        description="true when the conformal set is not a single label (any multilabel label "
        "uncertain); the model should not decide alone. null without calibration"
    )
    shift: Shift | None = Field(description="null when the task has no training statistics")
    modalities: ModalityUse
    routing: dict[str, Route] = Field(description="per used modality: top-k experts and gate weights")
    out_of_training_range: list[OutOfTrainingRange] = Field(
        default_factory=list,
        description="values the model is extrapolating on (empty when none; at most 32 are listed)",
    )


class PredictResponse(BaseModel):
    request_id: str
    task: str
    model_version: str
    cursor: int = Field(description="the continual stage whose weights serve this task")
    predictions: list[Prediction]


# A sample of the demo model (synthetic-icu specs): cxr is absent, one lab is missing.
EXAMPLE_SAMPLE: dict[str, Any] = {
    "id": "patient-17",
    "modalities": {
        "vitals": {
            "times": [0.5, 1.25, 4.0],
            "values": [
                [0.1, -0.3, 0.8, None, 0.0, 1.2],
                [0.2, -0.1, 0.7, 0.4, None, 1.1],
                [0.3, 0.0, 0.9, 0.5, 0.1, 1.0],
            ],
        },
        "labs": {"values": [-0.4, -1.0, -1.2, -0.3, -0.5, -0.8, -0.7, -0.4, 0.3, 0.2, 0.3, None]},
        "notes": {"text": "Respirations labored. Kidneys adequate. Will reassess in the morning."},
    },
}
PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "one_sample": {"summary": "one sample with some modalities absent", "value": EXAMPLE_SAMPLE},
    "instances": {
        "summary": "several samples in one request",
        "value": {
            "instances": [
                EXAMPLE_SAMPLE,
                {"id": 18, "modalities": {"labs": EXAMPLE_SAMPLE["modalities"]["labs"]}},
            ]
        },
    },
}
