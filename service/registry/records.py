"""Plain inputs to `register_version`: what a finished stage hands to the registry.

Dataclasses, not ORM rows and not API schemas: the worker builds them from `flame_core` results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from service.registry.models import MODALITY_KINDS, Modality, Task

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # flame_core's rule, capped at 64
NAME = re.compile(NAME_PATTERN)
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"  # "v1", "v2", ... or a name given at registration
ID_PATTERN = r"^[A-Za-z0-9-]{1,36}$"  # uuid4 strings: jobs and datasets
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL characters


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ValueError(f"{what} must be 1-64 letters, digits, '_' or '-', got {value!r}")
    return value


@dataclass(frozen=True)
class ComponentRecord:
    """One stored weight of the stage: `rank=None` for full (stage-0) weights, else its factor rank."""

    stage: int
    weight: str
    n_params: int
    rank: int | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.stage < 0:
            raise ValueError(f"component {self.weight!r}: stage must be >= 0, got {self.stage}")
        if not self.weight or len(self.weight) > 256:
            raise ValueError(f"component weight name must be 1-256 characters, got {self.weight!r}")
        if self.rank is not None and self.rank <= 0:
            raise ValueError(f"component {self.weight!r}: rank must be positive or None, got {self.rank}")
        if self.n_params < 0:
            raise ValueError(f"component {self.weight!r}: n_params must be >= 0, got {self.n_params}")


@dataclass(frozen=True)
class TaskRecord:
    """A task introduced by the stage: its spec (TaskSpec.to_dict()), cursor and post-truncation metrics."""

    name: str
    spec: dict[str, Any]
    cursor: int
    metrics: dict[str, Any] = field(default_factory=dict)
    model_card: dict[str, Any] = field(default_factory=dict)
    canary: dict[str, Any] | None = None  # stored canary samples and their output digest

    def __post_init__(self) -> None:
        check_name(self.name, "task name")
        if self.cursor < 0:
            raise ValueError(f"task {self.name!r}: cursor must be >= 0, got {self.cursor}")

    def to_row(self, version_id: str) -> Task:
        return Task(
            name=self.name,
            spec=self.spec,
            cursor=self.cursor,
            version_id=version_id,
            metrics=self.metrics,
            model_card=self.model_card,
            canary=self.canary,
        )


@dataclass(frozen=True)
class ModalityRecord:
    """A modality declared with the stage's tasks (ModalitySpec.to_dict() as `spec`)."""

    name: str
    kind: str
    spec: dict[str, Any]

    def __post_init__(self) -> None:
        check_name(self.name, "modality name")
        if self.kind not in MODALITY_KINDS:
            raise ValueError(
                f"modality {self.name!r}: kind must be one of {list(MODALITY_KINDS)}, got {self.kind!r}"
            )

    def to_row(self, version_id: str) -> Modality:
        return Modality(name=self.name, kind=self.kind, spec=self.spec, version_id=version_id)
