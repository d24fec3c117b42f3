"""Dataset uploads: parse JSONL, validate every line against task specs, summarise, store by digest.

Validation names the 1-based line and the dotted field so a user can fix the file; the summary
(counts, label balance per task, modality presence) lets a user sanity-check the data before
spending a training job on it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from flame_core.specs import SpecError, SpecSet
from flame_core.validation import SampleInvalid, validate_sample
from service.artifacts import ArtifactStore
from service.datasets.models import Dataset
from service.datasets.schemas import NAME_MAX
from service.errors import PayloadInvalid
from service.jobs.specs import stage_specs, version_specs
from service.registry import service as registry
from service.registry.errors import AliasNotFound, DatasetUnsuitable


class DatasetInvalid(PayloadInvalid):
    """A dataset line (or the specs it is checked against) is wrong; answered with 422."""

    code = "dataset_invalid"

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None) -> None:
        where = ([f"line {line}"] if line is not None else []) + ([f"field {field}"] if field else [])
        super().__init__(f"{', '.join(where)}: {message}" if where else message, field=field)
        self.line = line

    @property
    def extra(self) -> dict[str, object]:
        return {"line": self.line}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field, "line": self.line}


def parse_jsonl(data: bytes) -> list[tuple[int, Any]]:
    """(1-based line, parsed JSON) for every non-blank line."""
    out = []
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetInvalid("not valid UTF-8 text", field="$", line=lineno) from None
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            message = f"invalid JSON: {e.msg} (column {e.colno})"
            raise DatasetInvalid(message, field="$", line=lineno) from None
    if not out:
        raise DatasetInvalid("the dataset has no samples (empty body)", field="$")
    return out


def validate_lines(
    lines: Sequence[tuple[int, Any]], specs: SpecSet, tasks: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Canonical samples (see `flame_core.validation.validate_sample`); the first bad line raises."""
    samples = []
    for lineno, obj in lines:
        try:
            samples.append(validate_sample(obj, specs, tasks, index=lineno))
        except SampleInvalid as e:
            raise DatasetInvalid(str(e.message), field=e.field, line=lineno) from None
    return samples


def upload_specs(*, session: Session, inline: dict[str, Any] | None) -> SpecSet:
    """The active model's specs plus the tasks and modalities declared inline (both optional)."""
    try:
        base = version_specs(session=session, version=registry.resolve_alias(session=session).id)
    except AliasNotFound:
        base = SpecSet()
    inline = inline or {}
    try:
        if inline.get("tasks"):
            specs = base.merge(stage_specs(base, inline))
        elif inline.get("modalities"):
            specs = base.merge(SpecSet.from_dict({"modalities": inline["modalities"], "tasks": []}))
        else:
            specs = base
    except SpecError as e:
        raise DatasetInvalid(f"specs: {e.message}", field=f"specs.{e.field}") from None
    if not specs.tasks and not specs.modalities:
        raise DatasetInvalid(
            "no model is active and no specs were given; pass task specs to validate against", field="specs"
        )
    return specs


def _finite(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def summarise(samples: Sequence[dict[str, Any]], specs: SpecSet) -> dict[str, Any]:
    """Counts, label balance per task, how many samples carry each modality, and how many carry each
    exact set of modalities (`modality_sets`, "labs,vitals" -> n), which tells `POST /tasks` whether
    every sample has one of a new task's modalities without reading the file again."""
    modalities = Counter(m for s in samples for m in s["modalities"])
    modality_sets = Counter(",".join(sorted(s["modalities"])) for s in samples)
    tasks: dict[str, Any] = {}
    for name, task in specs.tasks.items():
        values = [s["labels"][name] for s in samples if name in s["labels"]]
        if not values:
            continue
        head = task.head
        if head.type == "regression":
            n = len(values)
            mean = sum(values) / n
            balance: dict[str, Any] = {
                "mean": _finite(mean),
                "std": _finite(math.sqrt(sum((v - mean) ** 2 for v in values) / n)),
                "min": _finite(min(values)),
                "max": _finite(max(values)),
            }
        elif head.type == "multilabel":
            names = list(head.labels) or [str(i) for i in range(head.classes)]
            balance = {names[i]: sum(v[i] for v in values) for i in range(head.classes)}
        else:
            n_cls = 2 if head.type == "binary" else head.classes
            names = list(head.labels) or [str(i) for i in range(n_cls)]
            counts = Counter(values)
            balance = {names[i]: counts.get(i, 0) for i in range(n_cls)}
        tasks[name] = {"labelled": len(values), "balance": balance}
    return {
        "n_samples": len(samples),
        "tasks": tasks,
        "modalities": {m: modalities.get(m, 0) for m in specs.modalities if modalities.get(m)},
        "modality_sets": dict(sorted(modality_sets.items())),
    }


def check_stage_data(*, dataset: Dataset, split: str, specs: SpecSet) -> None:
    """Refuse (DatasetUnsuitable, 422 naming `datasets.<split>`) a dataset whose summary shows it cannot
    train the new tasks of `specs`: no label for a task, or samples with none of a task's modalities
    (the worker would fail on them). Summaries from before `modality_sets` are checked on what they
    hold (some sample has one of the modalities); a dataset stored without a summary is left to the job."""
    summary = dataset.summary or {}
    if "tasks" not in summary:
        return
    where, field = f"{split} dataset {dataset.id} ({dataset.name!r})", f"datasets.{split}"
    n_samples = summary.get("n_samples", dataset.n_samples)
    for name, task in specs.tasks.items():
        if not (summary["tasks"].get(name) or {}).get("labelled"):
            raise DatasetUnsuitable(
                f"{where} has no labels for the new task {name!r}; upload it with labels for {name!r} "
                "(and its spec in `specs`)",
                field=field,
            )
        wanted = set(task.modalities)
        sets = summary.get("modality_sets")
        if sets is not None:
            lacking = sum(n for key, n in sets.items() if not wanted & set(key.split(",")))
        else:
            lacking = 0 if any(summary.get("modalities", {}).get(m) for m in wanted) else n_samples
        if lacking:
            raise DatasetUnsuitable(
                f"{where}: {lacking} of {n_samples} samples carry none of the modalities of the new task "
                f"{name!r} ({sorted(wanted)}); every sample needs at least one",
                field=field,
            )


def upload_dataset(
    *,
    session: Session,
    store: ArtifactStore,
    name: str,
    data: bytes,
    inline_specs: dict[str, Any] | None = None,
    created_by: str | None = None,
) -> Dataset:
    """Validate and summarise `data` (JSONL), then store it; the same bytes return the stored dataset."""
    if len(name) > NAME_MAX or "\x00" in name:
        raise DatasetInvalid(f"must be at most {NAME_MAX} characters and have no NUL", field="name")
    specs = upload_specs(session=session, inline=inline_specs)
    samples = validate_lines(parse_jsonl(data), specs)
    summary = summarise(samples, specs)
    summary["specs"] = specs.to_dict() if inline_specs else None
    return registry.create_dataset(
        session=session,
        store=store,
        name=name,
        content=data,
        n_samples=len(samples),
        summary=summary,
        created_by=created_by,
    )


def read_dataset(store: ArtifactStore, dataset: Dataset) -> list[tuple[int, Any]]:
    """The stored dataset's lines, digest-checked."""
    return parse_jsonl(store.read_bytes(dataset.artifact_sha256))
