"""One modality payload checked against its spec: shapes, finite numbers inside their bounds, times.

Errors are `SampleInvalid` naming a dotted field path (`modalities.vitals.times[3]`); `validation`
adds the sample, task and label checks around `check_payload`. Bounds: a spec's `value_range` (one
`[low, high]` for every feature, or one per feature), else +-MAX_ABS_VALUE, a bound wide enough for
clinical measurements in any unit and far inside what the model's float32 arithmetic keeps finite
and meaningful (at 1e20 a model's output no longer depends on the patient; at 1e38 it overflows).
"""

from __future__ import annotations

import math
import numbers
import reprlib
import sys
from functools import lru_cache
from typing import Any

from flame_core.specs import ModalitySpec
from flame_core.tokenizer import words

PAYLOAD_KEYS = {
    "timeseries": ({"times", "values"}, {"times", "values"}),  # (allowed, required)
    "tabular": ({"values"}, {"values"}),
    "text": ({"text"}, {"text"}),
    "embedding": ({"embedding", "embeddings", "times"}, set()),
    "image": ({"pixels"}, {"pixels"}),
}
_BIG = sys.float_info.max
# With no value_range declared, values must lie in +-MAX_ABS_VALUE; times are hours.
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
        where = [f"sample {brief(self.sample)}"] if self.sample is not None else []
        where += [f"task {self.task!r}"] if self.task is not None else []
        where += [f"modality {self.modality!r}"] if self.modality is not None else []
        return ", ".join([*where, f"field {self.field}"]) + f": {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The service's error body: `{"code", "message", "field"}` plus where it happened."""
        where = {"sample": self.sample, "task": self.task, "modality": self.modality}
        return {"code": "sample_invalid", "message": str(self), "field": self.field, **where}


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxlevel, _REPR.maxlong = 40, 40, 4, 2, 24


def brief(value: Any) -> str:
    """A user's value in a message, cut short: an error never echoes a whole payload back."""
    return _REPR.repr(value)


def invalid(message: str, field: str, modality: str | None = None, task: str | None = None) -> SampleInvalid:
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
        raise invalid(f"must be a list of {length} {what}, got {type(vec).__name__}", field, spec.name)
    if len(vec) != length:
        msg = f"has {len(vec)} values; expected {length} (the dim of {spec.name!r})"
        raise invalid(msg, field, spec.name)
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
            msg = f"must be a number{' or null' * allow_null}, got {brief(v)}"
            raise invalid(msg, f"{field}[{j}]", spec.name)
        if v != v:
            msg = "is NaN" + "; use null for a missing value" * allow_null
            raise invalid(msg, f"{field}[{j}]", spec.name)
        if abs(v) > _BIG:
            raise invalid(f"is not finite ({brief(v)})", f"{field}[{j}]", spec.name)
        hint = "" if spec.value_range else "; declare a value_range in the modality spec for larger values"
        msg = f"{brief(v)} is outside the accepted range [{lows[j]:g}, {highs[j]:g}]{hint}"
        raise invalid(msg, f"{field}[{j}]", spec.name)
    return length - nulls


def _check_times(times: Any, field: str, n: int, spec: ModalitySpec) -> list[float]:
    """Finite, non-decreasing hours, one per step."""
    if not isinstance(times, list):
        raise invalid(f"must be a list of {n} times in hours", field, spec.name)
    if len(times) != n:
        raise invalid(f"has {len(times)} times but there are {n} steps of values", field, spec.name)
    prev: Any = -math.inf
    for i, t in enumerate(times):
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
            raise invalid(f"must be a finite number of hours, got {brief(t)}", f"{field}[{i}]", spec.name)
        if not -MAX_ABS_TIME <= float(t) <= MAX_ABS_TIME:
            msg = f"{brief(t)} hours is outside the accepted range [{-MAX_ABS_TIME:g}, {MAX_ABS_TIME:g}]"
            raise invalid(msg, f"{field}[{i}]", spec.name)
        if t < prev:
            msg = f"must be non-decreasing: {brief(t)} comes after {brief(prev)}"
            raise invalid(msg, f"{field}[{i}]", spec.name)
        prev = t
    return times


def _check_steps(rows: Any, field: str, spec: ModalitySpec, unit: str) -> int:
    if not isinstance(rows, list) or not rows:
        raise invalid(f"must be a non-empty list of {unit}, each of {spec.dim} numbers", field, spec.name)
    if len(rows) > spec.max_len:
        raise invalid(f"has {len(rows)} {unit}; the limit is {spec.max_len}", field, spec.name)
    return len(rows)


def check_payload(p: Any, spec: ModalitySpec) -> dict[str, Any]:
    """Check one modality payload and return it in canonical form."""
    where = f"modalities.{spec.name}"
    allowed, required = PAYLOAD_KEYS[spec.kind]
    if not isinstance(p, dict):
        raise invalid(f"must be an object with keys {sorted(allowed)}", where, spec.name)
    extra, missing = sorted(set(p) - allowed), sorted(required - set(p))
    if extra:
        raise invalid(
            f"unknown key for a {spec.kind} modality; expected {sorted(allowed)}",
            f"{where}.{extra[0]}",
            spec.name,
        )
    if missing:
        raise invalid("missing", f"{where}.{missing[0]}", spec.name)

    if spec.kind == "timeseries":
        n = _check_steps(p["values"], f"{where}.values", spec, "time steps")
        times = _check_times(p["times"], f"{where}.times", n, spec)
        seen = 0
        for i, row in enumerate(p["values"]):
            seen += _check_vector(row, f"{where}.values[{i}]", spec.dim, spec, allow_null=True)
        if not seen:
            raise invalid(_NOTHING_OBSERVED, f"{where}.values", spec.name)
        return {"times": times, "values": p["values"]}
    if spec.kind == "tabular":
        if not _check_vector(p["values"], f"{where}.values", spec.dim, spec, allow_null=True):
            raise invalid(_NOTHING_OBSERVED, f"{where}.values", spec.name)
        return {"values": p["values"]}
    if spec.kind == "text":
        text = p["text"]
        if not isinstance(text, str):
            raise invalid(f"must be a string, got {type(text).__name__}", f"{where}.text", spec.name)
        if len(text) > spec.max_len:
            raise invalid(
                f"has {len(text)} characters; the limit is {spec.max_len}", f"{where}.text", spec.name
            )
        if not words(text):
            raise invalid("contains no words; leave out a modality with no text", f"{where}.text", spec.name)
        return {"text": text}
    if spec.kind == "embedding":
        return _embedding(p, spec, where)
    return {"pixels": _image(p["pixels"], spec, f"{where}.pixels")}


def _embedding(p: dict[str, Any], spec: ModalitySpec, where: str) -> dict[str, Any]:
    if ("embedding" in p) == ("embeddings" in p):
        msg = "give exactly one of 'embedding' (one vector) or 'embeddings' (a list with 'times')"
        raise invalid(msg, where, spec.name)
    if "embedding" in p:
        if "times" in p:
            msg = "goes with 'embeddings', not with a single 'embedding'"
            raise invalid(msg, f"{where}.times", spec.name)
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
        raise invalid(f"must be nested lists of shape {shape}", field, spec.name)
    three_d = bool(px[0]) and isinstance(px[0][0], list)
    if not three_d and spec.channels != 1:
        raise invalid(f"has 2 dimensions; {spec.name!r} needs {shape} (channels first)", field, spec.name)
    chans = px if three_d else [px]
    if len(chans) != spec.channels:
        raise invalid(f"has {len(chans)} channels; {spec.name!r} needs {shape}", field, spec.name)
    for c, rows in enumerate(chans):
        cf = f"{field}[{c}]" if three_d else field
        if not isinstance(rows, list) or len(rows) != spec.dim:
            n = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise invalid(f"has {n} rows; {spec.name!r} needs {shape}", cf, spec.name)
        for i, row in enumerate(rows):
            _check_vector(row, f"{cf}[{i}]", spec.dim, spec, allow_null=False)
    return chans
