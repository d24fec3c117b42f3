"""Modality, head and task specs: the contract between data, model and service (docs/design.md s2)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ModalityKind = Literal["timeseries", "tabular", "text", "embedding", "image"]
HeadType = Literal["binary", "multiclass", "multilabel", "regression"]
Interaction = Literal["spread", "concentrate"]

MODALITY_KINDS: tuple[str, ...] = ("timeseries", "tabular", "text", "embedding", "image")
HEAD_TYPES: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")
INTERACTIONS: tuple[str, ...] = ("spread", "concentrate")

DEFAULT_MAX_LEN = {"timeseries": 256, "embedding": 64, "text": 2048}
# A declared value_range may not reach past this: float32 arithmetic in the model stays exact enough
# and finite well inside it (validation's default bound, with no range declared, is far tighter).
MAX_DECLARED_VALUE = 1e12
ValueRange = tuple[float, float] | tuple[tuple[float, float] | None, ...]


def _checked_pair(v: Any, where: str) -> tuple[float, float]:
    """A finite `[low, high]` with low < high inside +-MAX_DECLARED_VALUE."""
    if not _is_pair(v):
        raise SpecError(f"must be [low, high], got {v!r}", where)
    lo, hi = float(v[0]), float(v[1])
    if not -MAX_DECLARED_VALUE <= lo < hi <= MAX_DECLARED_VALUE:
        raise SpecError(f"{list(v)} needs low < high within +-{MAX_DECLARED_VALUE:g}", where)
    return (lo, hi)


def _is_pair(v: Any) -> bool:
    """[low, high] as two real numbers (a list from JSON, a tuple from Python)."""
    return (
        isinstance(v, (list, tuple))
        and len(v) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    )


class SpecError(ValueError):
    """A spec is malformed; `field` names where (e.g. `modalities.vitals.dim`)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality. `dim` is features per step (timeseries, tabular, embedding), pixels per
    side (image: `dim` x `dim`, `channels` channels) or unused (text). `max_len` caps time steps,
    embeddings per sample, or characters of text."""

    name: str
    kind: ModalityKind
    dim: int = 0
    max_len: int = 0
    channels: int = 1
    value_range: ValueRange | None = None

    def __post_init__(self) -> None:
        where = f"modalities.{self.name}"
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise SpecError(f"modality name {self.name!r} must be non-empty alphanumeric/_/-", where)
        if self.kind not in MODALITY_KINDS:
            raise SpecError(f"kind {self.kind!r} is not one of {MODALITY_KINDS}", f"{where}.kind")
        if self.kind != "text" and self.dim <= 0:
            raise SpecError(f"dim must be a positive int for kind {self.kind!r}", f"{where}.dim")
        if self.max_len < 0:
            raise SpecError("max_len must be >= 0", f"{where}.max_len")
        if self.max_len == 0 and self.kind in DEFAULT_MAX_LEN:
            object.__setattr__(self, "max_len", DEFAULT_MAX_LEN[self.kind])
        if self.channels <= 0:
            raise SpecError("channels must be positive", f"{where}.channels")
        if self.value_range is not None:
            checked = self._checked_range(self.value_range, f"{where}.value_range")
            object.__setattr__(self, "value_range", checked)

    def _checked_range(self, vr: Any, where: str) -> ValueRange:
        """`[low, high]` for every feature, or one `[low, high]` (or null) per feature."""
        if _is_pair(vr):
            return _checked_pair(vr, where)
        if self.kind not in ("timeseries", "tabular", "embedding"):
            raise SpecError(f"must be one [low, high] for a {self.kind} modality", where)
        if not isinstance(vr, (list, tuple)) or len(vr) != self.dim:
            raise SpecError(f"needs one [low, high] (or null) per feature, {self.dim} in all", where)
        return tuple(None if r is None else _checked_pair(r, f"{where}[{j}]") for j, r in enumerate(vr))

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> ModalitySpec:
        if not isinstance(d, dict):
            raise SpecError("must be an object with 'kind'", f"modalities.{name}")
        unknown = set(d) - {"kind", "dim", "max_len", "channels", "value_range"}
        if unknown:
            raise SpecError(f"unknown keys {sorted(unknown)}", f"modalities.{name}")
        if "kind" not in d:
            raise SpecError("missing", f"modalities.{name}.kind")
        for key in ("dim", "max_len", "channels"):
            if key in d and (not isinstance(d[key], int) or isinstance(d[key], bool)):
                raise SpecError(f"must be an int, got {d[key]!r}", f"modalities.{name}.{key}")
        vr = d.get("value_range")
        if vr is not None and not (
            _is_pair(vr) or (isinstance(vr, list) and all(r is None or _is_pair(r) for r in vr))
        ):
            msg = f"must be [low, high] or a list of one [low, high] (or null) per feature, got {vr!r}"
            raise SpecError(msg, f"modalities.{name}.value_range")
        return cls(
            name=name,
            kind=d["kind"],
            dim=d.get("dim", 0),
            max_len=d.get("max_len", 0),
            channels=d.get("channels", 1),
            value_range=vr,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        if d["value_range"] is None:
            d.pop("value_range")
        elif _is_pair(self.value_range):
            d["value_range"] = list(d["value_range"])
        else:
            d["value_range"] = [None if r is None else list(r) for r in d["value_range"]]
        return d


@dataclass(frozen=True)
class HeadSpec:
    """Output head. `classes` is the number of outputs for multiclass/multilabel (1 otherwise)."""

    type: HeadType
    classes: int = 1
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise SpecError(f"type {self.type!r} is not one of {HEAD_TYPES}", "head.type")
        if self.type in ("multiclass", "multilabel"):
            if self.classes < 2:
                raise SpecError(f"{self.type} needs classes >= 2, got {self.classes}", "head.classes")
        elif self.classes != 1:
            object.__setattr__(self, "classes", 1)
        # A binary head has one output but two class names (for 0 and 1).
        n_names = 2 if self.type == "binary" else self.classes
        if self.labels and len(self.labels) != n_names:
            raise SpecError(f"{len(self.labels)} labels for {n_names} classes", "head.labels")

    @property
    def out_dim(self) -> int:
        return self.classes

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadSpec:
        if not isinstance(d, dict) or "type" not in d:
            raise SpecError("must be an object with 'type'", "head")
        raw_labels = d.get("labels", [])
        if not isinstance(raw_labels, list) or not all(isinstance(x, str) for x in raw_labels):
            raise SpecError(f"must be a list of class names, got {raw_labels!r}", "head.labels")
        labels = tuple(raw_labels)
        classes = d.get("classes", len(labels) if labels else 1)
        if not isinstance(classes, int) or isinstance(classes, bool):
            raise SpecError(f"must be an int, got {classes!r}", "head.classes")
        return cls(type=d["type"], classes=classes, labels=labels)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "classes": self.classes}
        if self.labels:
            d["labels"] = list(self.labels)
        return d


@dataclass(frozen=True)
class TaskSpec:
    name: str
    modalities: tuple[str, ...]
    head: HeadSpec
    interaction: Interaction = "spread"

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise SpecError(f"task name {self.name!r} must be non-empty alphanumeric/_/-", "tasks.name")
        if not self.modalities:
            raise SpecError("a task needs at least one modality", f"tasks.{self.name}.modalities")
        if len(set(self.modalities)) != len(self.modalities):
            raise SpecError("duplicate modality", f"tasks.{self.name}.modalities")
        if self.interaction not in INTERACTIONS:
            raise SpecError(f"must be one of {INTERACTIONS}", f"tasks.{self.name}.interaction")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        if not isinstance(d, dict) or "name" not in d:
            raise SpecError("each task must be an object with 'name'", "tasks")
        name = d["name"]
        if not isinstance(name, str):
            raise SpecError(f"task name must be a string, got {name!r}", "tasks.name")
        mods = d.get("modalities")
        if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
            raise SpecError("must be a list of modality names", f"tasks.{name}.modalities")
        try:
            head = HeadSpec.from_dict(d.get("head", {}))
        except SpecError as e:
            raise SpecError(e.message, f"tasks.{name}.{e.field}") from None
        return cls(name=name, modalities=tuple(mods), head=head, interaction=d.get("interaction", "spread"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modalities": list(self.modalities),
            "head": self.head.to_dict(),
            "interaction": self.interaction,
        }


@dataclass(frozen=True)
class SpecSet:
    """A task-spec file: modality specs plus the tasks over them."""

    modalities: dict[str, ModalitySpec] = field(default_factory=dict)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for task in self.tasks.values():
            for m in task.modalities:
                if m not in self.modalities:
                    raise SpecError(
                        f"task {task.name!r} uses modality {m!r}, which is not declared",
                        f"tasks.{task.name}.modalities",
                    )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpecSet:
        if not isinstance(d, dict):
            raise SpecError("a task-spec must be a JSON object", "$")
        mods = d.get("modalities", {})
        if not isinstance(mods, dict):
            raise SpecError("must be an object of name -> spec", "modalities")
        tasks = d.get("tasks", [])
        if not isinstance(tasks, list):
            raise SpecError("must be a list", "tasks")
        modalities = {name: ModalitySpec.from_dict(name, m) for name, m in mods.items()}
        parsed = [TaskSpec.from_dict(t) for t in tasks]
        names = [t.name for t in parsed]
        if len(set(names)) != len(names):
            raise SpecError(f"duplicate task names in {names}", "tasks")
        return cls(modalities=modalities, tasks={t.name: t for t in parsed})

    @classmethod
    def load(cls, path: str | Path) -> SpecSet:
        try:
            raw = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise SpecError(f"invalid JSON in {path}: {e}", "$") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": {n: m.to_dict() for n, m in self.modalities.items()},
            "tasks": [t.to_dict() for t in self.tasks.values()],
        }

    def subset(self, task_names: list[str]) -> SpecSet:
        missing = [t for t in task_names if t not in self.tasks]
        if missing:
            raise SpecError(f"unknown tasks {missing}; known: {sorted(self.tasks)}", "tasks")
        tasks = {t: self.tasks[t] for t in task_names}
        used = {m for t in tasks.values() for m in t.modalities}
        return SpecSet(modalities={n: s for n, s in self.modalities.items() if n in used}, tasks=tasks)

    def merge(self, other: SpecSet) -> SpecSet:
        """Add `other`'s modalities and tasks (a continual stage). A modality may be re-declared only
        identically; a task name may not be reused."""
        for name, spec in other.modalities.items():
            if name in self.modalities and self.modalities[name] != spec:
                raise SpecError(
                    f"modality {name!r} is already declared as {self.modalities[name].to_dict()}, "
                    f"got {spec.to_dict()}",
                    f"modalities.{name}",
                )
        clash = sorted(set(other.tasks) & set(self.tasks))
        if clash:
            raise SpecError(f"tasks {clash} already exist; a new stage needs new task names", "tasks")
        return SpecSet(
            modalities={**self.modalities, **other.modalities}, tasks={**self.tasks, **other.tasks}
        )
