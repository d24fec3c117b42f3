"""Sample validation: every payload is checked against its modality spec before a model sees it.

Errors are `SampleInvalid` naming the sample, task, modality and a dotted field path
(`modalities.vitals.times[3]`, `labels.death`), so the service can answer 422 with the place to fix.
Validated samples come back in one canonical form that `collate` relies on (see `validate_sample`).
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from flame_core.specs import HeadSpec, ModalitySpec, SpecSet
from flame_core.tokenizer import words

SAMPLE_KEYS = ("id", "modalities", "label", "labels")
PAYLOAD_KEYS = {
    "timeseries": ({"times", "values"}, {"times", "values"}),  # (allowed, required)
    "tabular": ({"values"}, {"values"}),
    "text": ({"text"}, {"text"}),
    "embedding": ({"embedding", "embeddings", "times"}, set()),
    "image": ({"pixels"}, {"pixels"}),
}
_BIG = sys.float_info.max
# With no value_range declared, values must lie in +-MAX_ABS_VALUE: wide for clinical measurements in
# any unit, and far inside what the model's float32 arithmetic keeps finite and meaningful (at 1e20 a
# model's output no longer depends on the patient; at 1e38 it overflows). Times are hours.
MAX_ABS_VALUE = 1e6
MAX_ABS_TIME = 1e6
_NOTHING_OBSERVED = "has no observed value (every entry is null); leave out a modality with nothing observed"


class SampleInvalid(ValueError):
    """A sample breaks its specs. `field` is a dotted path into the sample JSON."""

    def __init__(
        self,
        message: str,
        *,
        field: str,
        sample: int | str | None = None,
        task: str | None = None,
        modality: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.sample = sample
        self.task = task
        self.modality = modality

    def __str__(self) -> str:
        where = [f"sample {self.sample!r}"] if self.sample is not None else []
        where += [f"task {self.task!r}"] if self.task is not None else []
        where += [f"modality {self.modality!r}"] if self.modality is not None else []
        return ", ".join([*where, f"field {self.field}"]) + f": {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The service's error body: `{"code", "message", "field"}` plus where it happened."""
        where = {"sample": self.sample, "task": self.task, "modality": self.modality}
        return {"code": "sample_invalid", "message": str(self), "field": self.field, **where}


def _fail(message: str, field: str, modality: str | None = None, task: str | None = None) -> SampleInvalid:
    return SampleInvalid(message, field=field, modality=modality, task=task)


@lru_cache(maxsize=512)
def bounds_of(spec: ModalitySpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature (lows, highs) a value must lie in: the spec's `value_range` (one pair for all
    features, or one per feature, null meaning the global bound), else +-MAX_ABS_VALUE."""
    width = spec.dim if spec.kind != "text" else 0
    vr = spec.value_range
    if vr is None or isinstance(vr[0], float):
        lo, hi = vr if vr is not None else (-MAX_ABS_VALUE, MAX_ABS_VALUE)
        return (lo,) * width, (hi,) * width  # type: ignore[return-value]
    pairs = [r if r is not None else (-MAX_ABS_VALUE, MAX_ABS_VALUE) for r in vr]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)  # type: ignore[index]


def _check_vector(vec: Any, field: str, length: int, spec: ModalitySpec, allow_null: bool) -> int:
    """A list of `length` finite numbers (or nulls) inside the spec's bounds; returns how many are
    observed (not null)."""
    what = "numbers or nulls" if allow_null else "numbers"
    if not isinstance(vec, list):
        raise _fail(f"must be a list of {length} {what}, got {type(vec).__name__}", field, spec.name)
    if len(vec) != length:
        raise _fail(f"has {len(vec)} values; expected {length} (the dim of {spec.name!r})", field, spec.name)
    lows, highs = bounds_of(spec)
    nulls = 0
    for j, v in enumerate(vec):
        t = type(v)
        if t is float or t is int:
            if lows[j] <= v <= highs[j]:
                continue
        elif v is None and allow_null:
            nulls += 1
            continue
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):  # numpy scalars from Python callers
            v = float(v)
            if lows[j] <= v <= highs[j]:
                continue
        else:
            raise _fail(f"must be a number{' or null' * allow_null}, got {v!r}", f"{field}[{j}]", spec.name)
        if v != v:
            raise _fail("is NaN" + "; use null for a missing value" * allow_null, f"{field}[{j}]", spec.name)
        if abs(v) > _BIG:
            raise _fail(f"is not finite ({v!r})", f"{field}[{j}]", spec.name)
        hint = "" if spec.value_range else "; declare a value_range in the modality spec for larger values"
        msg = f"{v!r} is outside the accepted range [{lows[j]:g}, {highs[j]:g}]{hint}"
        raise _fail(msg, f"{field}[{j}]", spec.name)
    return length - nulls


def _check_times(times: Any, field: str, n: int, spec: ModalitySpec) -> list[float]:
    """Finite, non-decreasing hours, one per step."""
    if not isinstance(times, list):
        raise _fail(f"must be a list of {n} times in hours", field, spec.name)
    if len(times) != n:
        raise _fail(f"has {len(times)} times but there are {n} steps of values", field, spec.name)
    prev: Any = -math.inf
    for i, t in enumerate(times):
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
            raise _fail(f"must be a finite number of hours, got {t!r}", f"{field}[{i}]", spec.name)
        if not -MAX_ABS_TIME <= t <= MAX_ABS_TIME:
            msg = f"{t!r} hours is outside the accepted range [{-MAX_ABS_TIME:g}, {MAX_ABS_TIME:g}]"
            raise _fail(msg, f"{field}[{i}]", spec.name)
        if t < prev:
            raise _fail(f"must be non-decreasing: {t!r} comes after {prev!r}", f"{field}[{i}]", spec.name)
        prev = t
    return times


def _check_steps(rows: Any, field: str, spec: ModalitySpec, unit: str) -> int:
    if not isinstance(rows, list) or not rows:
        raise _fail(f"must be a non-empty list of {unit}, each of {spec.dim} numbers", field, spec.name)
    if len(rows) > spec.max_len:
        raise _fail(f"has {len(rows)} {unit}; the limit is {spec.max_len}", field, spec.name)
    return len(rows)


def _payload(p: Any, spec: ModalitySpec) -> dict[str, Any]:
    """Check one modality payload and return it in canonical form."""
    where = f"modalities.{spec.name}"
    allowed, required = PAYLOAD_KEYS[spec.kind]
    if not isinstance(p, dict):
        raise _fail(f"must be an object with keys {sorted(allowed)}", where, spec.name)
    extra, missing = sorted(set(p) - allowed), sorted(required - set(p))
    if extra:
        raise _fail(
            f"unknown key for a {spec.kind} modality; expected {sorted(allowed)}",
            f"{where}.{extra[0]}",
            spec.name,
        )
    if missing:
        raise _fail("missing", f"{where}.{missing[0]}", spec.name)

    if spec.kind == "timeseries":
        n = _check_steps(p["values"], f"{where}.values", spec, "time steps")
        times = _check_times(p["times"], f"{where}.times", n, spec)
        seen = 0
        for i, row in enumerate(p["values"]):
            seen += _check_vector(row, f"{where}.values[{i}]", spec.dim, spec, allow_null=True)
        if not seen:
            raise _fail(_NOTHING_OBSERVED, f"{where}.values", spec.name)
        return {"times": times, "values": p["values"]}
    if spec.kind == "tabular":
        if not _check_vector(p["values"], f"{where}.values", spec.dim, spec, allow_null=True):
            raise _fail(_NOTHING_OBSERVED, f"{where}.values", spec.name)
        return {"values": p["values"]}
    if spec.kind == "text":
        text = p["text"]
        if not isinstance(text, str):
            raise _fail(f"must be a string, got {type(text).__name__}", f"{where}.text", spec.name)
        if len(text) > spec.max_len:
            raise _fail(
                f"has {len(text)} characters; the limit is {spec.max_len}", f"{where}.text", spec.name
            )
        if not words(text):
            raise _fail("contains no words; leave out a modality with no text", f"{where}.text", spec.name)
        return {"text": text}
    if spec.kind == "embedding":
        return _embedding(p, spec, where)
    return {"pixels": _image(p["pixels"], spec, f"{where}.pixels")}


def _embedding(p: dict[str, Any], spec: ModalitySpec, where: str) -> dict[str, Any]:
    if ("embedding" in p) == ("embeddings" in p):
        msg = "give exactly one of 'embedding' (one vector) or 'embeddings' (a list with 'times')"
        raise _fail(msg, where, spec.name)
    if "embedding" in p:
        if "times" in p:
            raise _fail("goes with 'embeddings', not with a single 'embedding'", f"{where}.times", spec.name)
        _check_vector(p["embedding"], f"{where}.embedding", spec.dim, spec, allow_null=False)
        return {"embeddings": [p["embedding"]], "times": [0.0]}
    n = _check_steps(p["embeddings"], f"{where}.embeddings", spec, "embeddings")
    times = _check_times(p["times"], f"{where}.times", n, spec) if "times" in p else [0.0] * n
    for i, vec in enumerate(p["embeddings"]):
        _check_vector(vec, f"{where}.embeddings[{i}]", spec.dim, spec, allow_null=False)
    return {"embeddings": p["embeddings"], "times": times}


def _image(px: Any, spec: ModalitySpec, field: str) -> list[Any]:
    """H x W (one channel) or C x H x W, with H = W = spec.dim; returned as C x H x W."""
    side = f"{spec.dim} x {spec.dim}"
    shape = f"{spec.channels} x {side}" + (f" or {side}" if spec.channels == 1 else "")
    if not isinstance(px, list) or not px or not isinstance(px[0], list):
        raise _fail(f"must be nested lists of shape {shape}", field, spec.name)
    three_d = bool(px[0]) and isinstance(px[0][0], list)
    if not three_d and spec.channels != 1:
        raise _fail(f"has 2 dimensions; {spec.name!r} needs {shape} (channels first)", field, spec.name)
    chans = px if three_d else [px]
    if len(chans) != spec.channels:
        raise _fail(f"has {len(chans)} channels; {spec.name!r} needs {shape}", field, spec.name)
    for c, rows in enumerate(chans):
        cf = f"{field}[{c}]" if three_d else field
        if not isinstance(rows, list) or len(rows) != spec.dim:
            n = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise _fail(f"has {n} rows; {spec.name!r} needs {shape}", cf, spec.name)
        for i, row in enumerate(rows):
            _check_vector(row, f"{cf}[{i}]", spec.dim, spec, allow_null=False)
    return chans


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
            raise _fail(f"regression label must be a finite number, got {value!r}", field, task=task)
        return float(value)
    if head.type == "multilabel":
        if not isinstance(value, list) or len(value) != head.classes:
            msg = f"multilabel label must be a list of {head.classes} values 0/1, got {value!r}"
            raise _fail(msg, field, task=task)
        out = [_integral(v) for v in value]
        for j, v in enumerate(out):
            if v not in (0, 1):
                raise _fail(f"must be 0 or 1, got {value[j]!r}", f"{field}[{j}]", task=task)
        return out  # type: ignore[return-value]
    if isinstance(value, str) and value in head.labels:  # a class name from the head's labels
        return head.labels.index(value)
    k = _integral(value)
    names = f" or one of {list(head.labels)}" if head.labels else ""
    if head.type == "binary" and k not in (0, 1):
        raise _fail(f"binary label must be 0 or 1{names}, got {value!r}", field, task=task)
    if head.type == "multiclass" and (k is None or not 0 <= k < head.classes):
        msg = f"multiclass label must be an int 0..{head.classes - 1}{names}, got {value!r}"
        raise _fail(msg, field, task=task)
    return k  # type: ignore[return-value]


def _raw_labels(sample: dict[str, Any], specs: SpecSet) -> dict[str, Any]:
    if "label" in sample and "labels" in sample:
        raise _fail("give either 'label' (one task) or 'labels' ({task: label}), not both", "label")
    raw = sample.get("labels") or {}
    if not isinstance(raw, dict):
        raise _fail("must be an object of task name -> label", "labels")
    for name in raw:
        if name not in specs.tasks:
            raise _fail(f"unknown task; known tasks: {sorted(specs.tasks)}", f"labels.{name}", task=name)
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
        e.sample = index if index is not None else (sample.get("id") if isinstance(sample, dict) else None)
        raise


def _validate(
    sample: Any, specs: SpecSet, tasks: Sequence[str] | None, require_label: bool
) -> dict[str, Any]:
    if not isinstance(sample, dict):
        raise _fail(f"a sample must be a JSON object, got {type(sample).__name__}", "$")
    extra = sorted(set(sample) - set(SAMPLE_KEYS))
    if extra:
        raise _fail(f"unknown key; a sample has only {list(SAMPLE_KEYS)}", extra[0])
    sid = sample.get("id")
    if sid is not None and (isinstance(sid, bool) or not isinstance(sid, (str, int))):
        raise _fail(f"must be a string, got {sid!r}", "id")
    mods = sample.get("modalities")
    if not isinstance(mods, dict):
        raise _fail("missing or not an object of modality name -> payload", "modalities")
    out_mods: dict[str, Any] = {}
    for name, payload in mods.items():
        if name not in specs.modalities:
            msg = f"unknown modality {name!r}; known: {sorted(specs.modalities)}"
            raise _fail(msg, f"modalities.{name}", modality=name)
        out_mods[name] = _payload(payload, specs.modalities[name])

    raw = _raw_labels(sample, specs)
    single = sample.get("label")
    in_play = list(tasks) if tasks is not None else [t for t in specs.tasks if t in raw]
    if single is not None:
        if tasks is None and not raw and len(specs.tasks) == 1:
            in_play = list(specs.tasks)
        if len(in_play) != 1:
            asked = f"the tasks are {in_play if tasks is not None else sorted(specs.tasks)}"
            msg = f"a single 'label' needs exactly one task, but {asked}; use 'labels': {{task: label}}"
            raise _fail(msg, "label")
        raw = {in_play[0]: single}
    field_of = {t: "label" if "label" in sample else f"labels.{t}" for t in in_play}

    if not out_mods:
        raise _fail("a sample needs at least one modality", "modalities")
    for t in in_play:
        task = specs.tasks[t]
        if not any(m in out_mods for m in task.modalities):
            msg = (
                f"has none of the modalities of task {t!r} ({list(task.modalities)}); at least one is needed"
            )
            raise _fail(msg, "modalities", task=t)
    labels: dict[str, Any] = {}
    for t in in_play:
        if t in raw:
            labels[t] = check_label(raw[t], specs.tasks[t].head, field_of[t], t)
        elif require_label:
            raise _fail(f"missing label for task {t!r}", field_of[t], task=t)
    if require_label and not in_play:
        raise _fail("a labelled sample is required, but it has no 'label' or 'labels'", "labels")
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
