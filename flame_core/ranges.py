"""Training ranges: the observed range of every input feature, and the fields of a sample outside it.

A model is trustworthy where it was trained. For each task we keep, per modality it reads, the
smallest and largest observed value of every feature (per column of a timeseries, tabular or
embedding payload; one range for an image's pixels) and of the times. A prediction is still made
for a value inside the accepted bound (`validation.MAX_ABS_VALUE` or the spec's `value_range`) but
outside these ranges; the service names each such field so a clinician sees the extrapolation.

Ranges are plain JSON (`{modality: {"values": [[lo, hi] | None, ...], "times": [lo, hi] | None}}`)
so they travel in checkpoints and registry manifests unchanged; a task's ranges are fixed when its
stage ends, like its weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from flame_core.specs import ModalitySpec, SpecSet

Range = list[float] | None  # [low, high], or None when the feature was never observed
ModalityRanges = dict[str, Any]  # {"values": [Range per feature], "times": Range}
MAX_REPORTED = 32  # fields named per prediction; the rest are counted in `more`

_NAN_FOR_NONE: dict[Any, float] = {None: float("nan")}


def _rows(payload: Mapping[str, Any], spec: ModalitySpec) -> tuple[list[Any], list[Any] | None]:
    """(rows of feature values, times or None) of one canonical payload; an image is one row of
    width 1 per pixel (one range for all its pixels)."""
    if spec.kind == "timeseries":
        return payload["values"], payload["times"]
    if spec.kind == "tabular":
        return [payload["values"]], None
    if spec.kind == "embedding":
        if "embedding" in payload:
            return [payload["embedding"]], None
        return payload["embeddings"], payload.get("times")
    if spec.kind == "image":
        px = payload["pixels"]
        channels = px if isinstance(px[0][0], list) else [px]  # H x W is one channel
        return [[v] for channel in channels for row in channel for v in row], None
    return [], None


def _width(spec: ModalitySpec) -> int:
    return 1 if spec.kind == "image" else spec.dim


def _matrix(rows: list[Any], width: int) -> np.ndarray:
    """Rows of numbers or nulls as a float64 (n, width) array with NaN for null."""
    flat = [_NAN_FOR_NONE.get(v, v) for row in rows for v in row]
    return np.asarray(flat, dtype=np.float64).reshape(len(rows), width)


def observed_ranges(samples: Iterable[Mapping[str, Any]], specs: SpecSet, modalities: Sequence[str]) -> dict:
    """The per-feature [min, max] of observed values (and times) of `modalities` over `samples`."""
    specs_of = {m: specs.modalities[m] for m in modalities if specs.modalities[m].kind != "text"}
    lo = {m: np.full(_width(s), np.inf) for m, s in specs_of.items()}
    hi = {m: np.full(_width(s), -np.inf) for m, s in specs_of.items()}
    t_lo = dict.fromkeys(specs_of, np.inf)
    t_hi = dict.fromkeys(specs_of, -np.inf)
    for sample in samples:
        for m, spec in specs_of.items():
            payload = sample["modalities"].get(m)
            if payload is None:
                continue
            rows, times = _rows(payload, spec)
            a = _matrix(rows, _width(spec))  # (n, width), NaN where missing
            lo[m] = np.fmin(lo[m], np.min(np.where(np.isnan(a), np.inf, a), axis=0, initial=np.inf))
            hi[m] = np.fmax(hi[m], np.max(np.where(np.isnan(a), -np.inf, a), axis=0, initial=-np.inf))
            if times:
                t_lo[m], t_hi[m] = min(t_lo[m], min(times)), max(t_hi[m], max(times))
    out: dict[str, ModalityRanges] = {}
    for m in specs_of:
        values: list[Range] = [
            [float(a), float(b)] if a <= b else None for a, b in zip(lo[m], hi[m], strict=True)
        ]
        times_range: Range = [float(t_lo[m]), float(t_hi[m])] if t_lo[m] <= t_hi[m] else None
        out[m] = {"values": values, "times": times_range}
    return out


def _value_field(payload: Mapping[str, Any], spec: ModalitySpec, step: int, j: int) -> str:
    where = f"modalities.{spec.name}"
    if spec.kind == "timeseries":
        return f"{where}.values[{step}][{j}]"
    if spec.kind == "tabular":
        return f"{where}.values[{j}]"
    if spec.kind == "image":
        c, i, k = np.unravel_index(step, (spec.channels, spec.dim, spec.dim))
        return f"{where}.pixels[{c}][{i}][{k}]"
    if "embedding" in payload:
        return f"{where}.embedding[{j}]"
    return f"{where}.embeddings[{step}][{j}]"


def outside_ranges(
    sample: Mapping[str, Any], specs: SpecSet, ranges: Mapping[str, ModalityRanges]
) -> tuple[list[dict[str, Any]], int]:
    """(up to MAX_REPORTED `{"field", "low", "high"}` of `sample` outside `ranges`, how many in all).

    `sample` has passed validation (raw or canonical). A feature never observed in training has no
    range: any value of it is outside, reported with `low` and `high` None.
    """
    found: list[dict[str, Any]] = []
    total = 0
    for m, r in ranges.items():
        payload = sample["modalities"].get(m)
        if payload is None or m not in specs.modalities:
            continue
        spec = specs.modalities[m]
        rows, times = _rows(payload, spec)
        bounds = np.array([b or (np.nan, np.nan) for b in r["values"]], dtype=np.float64)  # (width, 2)
        a = _matrix(rows, _width(spec))  # (n, width)
        lo, hi = bounds[:, 0], bounds[:, 1]
        outside = ~np.isnan(a) & ((a < lo) | (a > hi) | np.isnan(lo))
        total += int(outside.sum())
        for step, j in zip(*np.nonzero(outside), strict=True):
            if len(found) == MAX_REPORTED:
                break
            low, high = r["values"][int(j)] or (None, None)
            found.append({"field": _value_field(payload, spec, int(step), int(j)), "low": low, "high": high})
        tr = r.get("times")
        for step, t in enumerate(times or ()):
            if tr is not None and not tr[0] <= t <= tr[1]:
                total += 1
                if len(found) < MAX_REPORTED:
                    found.append({"field": f"modalities.{m}.times[{step}]", "low": tr[0], "high": tr[1]})
    return found, total


def record_training_ranges(
    training_ranges: dict[str, dict],
    samples: Sequence[Mapping[str, Any]],
    specs: SpecSet,
    tasks: Sequence[str],
) -> None:
    """Store in `training_ranges` (e.g. `ContinualFlame.training_ranges`) each task's input ranges over
    the `samples` labelled for it. A task's ranges are set once, when its stage ends."""
    for t in tasks:
        if t in training_ranges:
            raise ValueError(f"training ranges of task {t!r} are already recorded; they never change")
        labelled = [s for s in samples if t in s.get("labels", {})]
        training_ranges[t] = observed_ranges(labelled, specs, specs.tasks[t].modalities)


def _check_range(value: Any, where: str) -> None:
    ok = value is None or (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in value)
        and value[0] <= value[1]
    )
    if not ok:
        raise ValueError(f"{where}: a range is null or [low, high] with finite low <= high, got {value!r}")


def check_training_ranges(ranges: Any, specs: SpecSet) -> None:
    """ValueError naming the path unless `ranges` is `{task: {modality: {"values": [one range per
    feature], "times": range}}}` over tasks of `specs` and modalities they read (ranges brought from
    outside, e.g. a checkpoint's, are checked before predictions rely on them)."""
    if not isinstance(ranges, dict):
        raise ValueError(f"training_ranges must be an object of task -> ranges, got {type(ranges).__name__}")
    for t, per_modality in ranges.items():
        if t not in specs.tasks:
            raise ValueError(f"training_ranges.{t}: no such task; tasks: {sorted(specs.tasks)}")
        if not isinstance(per_modality, dict):
            raise ValueError(f"training_ranges.{t} must be an object of modality -> ranges")
        for m, r in per_modality.items():
            where = f"training_ranges.{t}.{m}"
            if m not in specs.tasks[t].modalities or specs.modalities[m].kind == "text":
                raise ValueError(f"{where}: task {t!r} reads no numeric modality {m!r}")
            if not isinstance(r, dict) or not isinstance(r.get("values"), list):
                raise ValueError(f"{where} must be an object with a list of per-feature ranges in 'values'")
            width = _width(specs.modalities[m])
            if len(r["values"]) != width:
                raise ValueError(f"{where}.values has {len(r['values'])} ranges; the modality has {width}")
            for j, value in enumerate(r["values"]):
                _check_range(value, f"{where}.values[{j}]")
            _check_range(r.get("times"), f"{where}.times")
