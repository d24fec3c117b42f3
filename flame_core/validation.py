"""Sample validation: every payload is checked against its modality spec before a model sees it.

Errors are `SampleInvalid` naming the sample, task, modality and a dotted field path
(`modalities.vitals.times[3]`, `labels.death`), so the service can answer 422 with the place to fix.
Validated samples come back in one canonical form that `collate` relies on (see `validate_sample`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from flame_core.payloads import MAX_ABS_TIME, MAX_ABS_VALUE, SampleInvalid, brief, check_payload, invalid
from flame_core.specs import HeadSpec, SpecSet

__all__ = [
    "MAX_ABS_TIME",
    "MAX_ABS_VALUE",
    "SampleInvalid",
    "check_label",
    "validate_dataset",
    "validate_sample",
]

SAMPLE_KEYS = ("id", "modalities", "label", "labels")


def _integral(v: Any) -> int | None:
    """An int label, accepting 1.0 from CSV-exported JSON but never a bool."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    f = float(v)
    return int(f) if math.isfinite(f) and f.is_integer() else None


def check_label(value: Any, head: HeadSpec, field: str, task: str) -> int | float | list[int]:
    """Check one label against its head and return it canonical (int, float or list of 0/1)."""
    if head.type == "regression":
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise invalid(f"regression label must be a finite number, got {brief(value)}", field, task=task)
        return float(value)
    if head.type == "multilabel":
        if not isinstance(value, list) or len(value) != head.classes:
            msg = f"multilabel label must be a list of {head.classes} values 0/1, got {brief(value)}"
            raise invalid(msg, field, task=task)
        out = [_integral(v) for v in value]
        for j, v in enumerate(out):
            if v not in (0, 1):
                raise invalid(f"must be 0 or 1, got {brief(value[j])}", f"{field}[{j}]", task=task)
        return out  # type: ignore[return-value]
    if isinstance(value, str) and value in head.labels:  # a class name from the head's labels
        return head.labels.index(value)
    k = _integral(value)
    names = f" or one of {list(head.labels)}" if head.labels else ""
    if head.type == "binary" and k not in (0, 1):
        raise invalid(f"binary label must be 0 or 1{names}, got {brief(value)}", field, task=task)
    if head.type == "multiclass" and (k is None or not 0 <= k < head.classes):
        msg = f"multiclass label must be an int 0..{head.classes - 1}{names}, got {brief(value)}"
        raise invalid(msg, field, task=task)
    return k  # type: ignore[return-value]


def _raw_labels(sample: dict[str, Any], specs: SpecSet) -> dict[str, Any]:
    if "label" in sample and "labels" in sample:
        raise invalid("give either 'label' (one task) or 'labels' ({task: label}), not both", "label")
    raw = sample.get("labels") or {}
    if not isinstance(raw, dict):
        raise invalid("must be an object of task name -> label", "labels")
    for name in raw:
        if name not in specs.tasks:
            raise invalid(f"unknown task; known tasks: {sorted(specs.tasks)}", f"labels.{name}", task=name)
    return {k: v for k, v in raw.items() if v is not None}


def validate_sample(
    sample: Any,
    specs: SpecSet,
    tasks: Sequence[str] | None = None,
    *,
    index: int | str | None = None,
    require_label: bool = False,
) -> dict[str, Any]:
    """Check one sample; return `{"id", "modalities", "labels"}` in canonical form.

    Canonical: timeseries `{times, values}`, tabular `{values}`, text `{text}`, embedding always
    `{embeddings, times}`, image `{pixels}` as C x H x W; `labels` holds only the tasks in play
    (`tasks`, or else the tasks the sample has labels for), a single `label` mapped to its task.
    """
    if tasks is not None:
        unknown = [t for t in tasks if t not in specs.tasks]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; known: {sorted(specs.tasks)}")
    try:
        return _validate(sample, specs, tasks, require_label)
    except SampleInvalid as e:
        sid = sample.get("id") if isinstance(sample, dict) else None
        readable = isinstance(sid, (str, int)) and not isinstance(sid, bool)  # an invalid id is not echoed
        e.sample = index if index is not None else (sid if readable else None)
        raise


def _validate(
    sample: Any, specs: SpecSet, tasks: Sequence[str] | None, require_label: bool
) -> dict[str, Any]:
    if not isinstance(sample, dict):
        raise invalid(f"a sample must be a JSON object, got {type(sample).__name__}", "$")
    extra = sorted(set(sample) - set(SAMPLE_KEYS))
    if extra:
        raise invalid(f"unknown key; a sample has only {list(SAMPLE_KEYS)}", extra[0])
    sid = sample.get("id")
    if sid is not None and (isinstance(sid, bool) or not isinstance(sid, (str, int))):
        raise invalid(f"must be a string, got {brief(sid)}", "id")
    mods = sample.get("modalities")
    if not isinstance(mods, dict):
        raise invalid("missing or not an object of modality name -> payload", "modalities")
    out_mods: dict[str, Any] = {}
    for name, payload in mods.items():
        if name not in specs.modalities:
            msg = f"unknown modality {brief(name)}; known: {sorted(specs.modalities)}"
            raise invalid(msg, f"modalities.{name}", modality=name)
        out_mods[name] = check_payload(payload, specs.modalities[name])

    raw = _raw_labels(sample, specs)
    single = sample.get("label")
    in_play = list(tasks) if tasks is not None else [t for t in specs.tasks if t in raw]
    if single is not None:
        if tasks is None and not raw and len(specs.tasks) == 1:
            in_play = list(specs.tasks)
        if len(in_play) != 1:
            asked = f"the tasks are {in_play if tasks is not None else sorted(specs.tasks)}"
            msg = f"a single 'label' needs exactly one task, but {asked}; use 'labels': {{task: label}}"
            raise invalid(msg, "label")
        raw = {in_play[0]: single}
    field_of = {t: "label" if "label" in sample else f"labels.{t}" for t in in_play}

    if not out_mods:
        raise invalid("a sample needs at least one modality", "modalities")
    for t in in_play:
        task = specs.tasks[t]
        if not any(m in out_mods for m in task.modalities):
            msg = (
                f"has none of the modalities of task {t!r} ({list(task.modalities)}); at least one is needed"
            )
            raise invalid(msg, "modalities", task=t)
    labels: dict[str, Any] = {}
    for t in in_play:
        if t in raw:
            labels[t] = check_label(raw[t], specs.tasks[t].head, field_of[t], t)
        elif require_label:
            raise invalid(f"missing label for task {t!r}", field_of[t], task=t)
    if require_label and not in_play:
        raise invalid("a labelled sample is required, but it has no 'label' or 'labels'", "labels")
    return {"id": None if sid is None else str(sid), "modalities": out_mods, "labels": labels}


def validate_dataset(
    samples: Iterable[Any],
    specs: SpecSet,
    tasks: Sequence[str] | None = None,
    *,
    require_label: bool = False,
) -> list[dict[str, Any]]:
    """Validate every sample; the first bad one raises with `sample` = its 0-based position."""
    return [
        validate_sample(s, specs, tasks, index=i, require_label=require_label) for i, s in enumerate(samples)
    ]
