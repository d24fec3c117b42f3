"""Prediction as plain functions: validate and collate a request (`prepare`), then shape the outputs
of its rows of a batched forward pass (`finish`); `service.inference.batcher` runs the forward.

Kept apart from the router so the steps are testable and the route stays thin. Nothing here logs or
stores payloads; only modality names and counts leave this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flame_core.batch import Batch
from flame_core.calibration import prediction_set
from flame_core.ranges import outside_ranges
from flame_core.specs import HeadSpec
from flame_core.validation import SampleInvalid, validate_sample
from service.errors import PayloadInvalid, PredictionNotFinite
from service.inference.batcher import Rows
from service.inference.host import LoadedVersion
from service.observability import (
    EXPERT_SELECTIONS,
    MODALITY_PRESENCE,
    NONFINITE_PREDICTIONS,
    PREDICT_DURATION,
    PREDICTIONS,
    SHIFTED,
)
from service.registry.errors import TaskNotFound


@dataclass
class PredictResult:
    task: str
    version: str
    cursor: int
    predictions: list[dict[str, Any]]
    present: list[str]  # modalities used by at least one instance
    missing: list[str]  # task modalities missing from at least one instance


def instances_of(body: Any, max_instances: int) -> tuple[list[Any], bool]:
    """(samples, batched): `{"instances": [...]}` or one bare sample."""
    if isinstance(body, dict) and "instances" in body:
        items = body["instances"]
        if not isinstance(items, list) or not items:
            raise PayloadInvalid("'instances' must be a non-empty list of samples", field="instances")
        if len(items) > max_instances:
            raise PayloadInvalid(
                f"{len(items)} instances exceed the limit of {max_instances} per request", field="instances"
            )
        extra = sorted(set(body) - {"instances"})
        if extra:
            raise PayloadInvalid(f"unknown key beside 'instances': {extra[0]!r}", field=extra[0])
        return items, True
    return [body], False


def check_task(loaded: LoadedVersion, task: str) -> None:
    if task not in loaded.specs.tasks:
        known = sorted(loaded.specs.tasks)
        raise TaskNotFound(
            f"task {task!r} is not served by model version {loaded.id!r}; tasks: {known}", field="task"
        )


def validate_instances(loaded: LoadedVersion, task: str, items: list[Any], batched: bool) -> list[dict]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(validate_sample(item, loaded.specs, [task], index=i if batched else None))
        except SampleInvalid as e:
            if batched:
                e.field = f"instances[{i}].{e.field}" if e.field != "$" else f"instances[{i}]"
            raise
    return out


def head_output(head: HeadSpec, value: Any) -> dict[str, Any]:
    """The caller-facing output of one instance from its row of `predict_outputs` (as Python)."""
    if head.type == "binary":
        p = float(value)
        label = int(p >= 0.5)
        name = head.labels[label] if head.labels else None
        return {"type": "binary", "probability": p, "label": label, "class_name": name}
    if head.type == "multiclass":
        probs = [float(v) for v in value]
        label = max(range(len(probs)), key=probs.__getitem__)
        name = head.labels[label] if head.labels else None
        return {"type": "multiclass", "probabilities": probs, "label": label, "class_name": name}
    if head.type == "multilabel":
        names = list(head.labels) or [str(j) for j in range(head.classes)]
        named = {n: float(v) for n, v in zip(names, value, strict=True)}
        return {
            "type": "multilabel",
            "probabilities": named,
            "labels": [n for n, p in named.items() if p >= 0.5],
        }
    return {"type": "regression", "value": float(value)}


def check_finite(task: str, finite: list[bool], batched: bool) -> None:
    """Raise PredictionNotFinite (422, counted) if any instance's output or gate weight is not a
    finite number (`Rows.finite`): a NaN must never reach a client as a probability or a label."""
    if all(finite):
        return
    bad = [i for i, ok in enumerate(finite) if not ok]
    NONFINITE_PREDICTIONS.labels(task=task).inc(len(bad))
    where = f"instances[{bad[0]}]" if batched else "modalities"
    raise PredictionNotFinite(
        f"the model's output for {'instance ' + str(bad[0]) if batched else 'this sample'} is not a finite "
        "number; no prediction is given. Check the inputs' units and ranges.",
        field=where,
    )


def _names(head: HeadSpec, indices: list[int]) -> list[str]:
    return [head.labels[j] if head.labels else str(j) for j in indices]


def judge(head: HeadSpec, calib: dict | None, shift: dict | None, rows: Rows, i: int) -> dict[str, Any]:
    """Instance `i`'s calibrated output with its conformal set, abstention and shift flag (each None
    when the task has no such statistics). Pure Python: it runs on the event loop."""
    out: dict[str, Any] = {"calibrated": None, "abstain": None, "shift": None}
    if calib is not None and rows.calibrated is not None:
        value = rows.calibrated[i]
        decided = prediction_set(head, value, calib)
        block: dict[str, Any] = {
            "output": head_output(head, value),
            "coverage": calib["coverage"],
            "set": None,
            "labels": None,
            "interval": decided.get("interval"),
        }
        if "set" in decided:
            block["set"] = _names(head, decided["set"])
        if "labels" in decided:
            block["labels"] = {_names(head, [int(j)])[0]: v for j, v in decided["labels"].items()}
        out["calibrated"], out["abstain"] = block, decided["abstain"]
    if shift is not None and rows.shift is not None:
        score = rows.shift[i]
        if score is not None:
            threshold = shift["threshold"]
            out["shift"] = {"score": score, "threshold": threshold, "in_distribution": score <= threshold}
    return out


@dataclass
class Prepared:
    """A request validated and collated: what the batcher needs, and what the answer needs."""

    loaded: LoadedVersion
    task: str
    items: list[Any]  # the request's samples as sent (for the training-range check)
    samples: list[dict[str, Any]]  # validated
    batched: bool  # {"instances": [...]} rather than one bare sample
    batch: Batch


def prepare(*, loaded: LoadedVersion, task: str, body: Any, max_instances: int) -> Prepared:
    """Validate every instance and collate them (per request, off the inference thread)."""
    check_task(loaded, task)
    t0 = time.perf_counter()
    items, batched = instances_of(body, max_instances)
    samples = validate_instances(loaded, task, items, batched)
    batch = loaded.prepare(samples, task)
    PREDICT_DURATION.labels(task=task, stage="validate").observe(time.perf_counter() - t0)
    return Prepared(loaded, task, items, samples, batched, batch)


def finish(prepared: Prepared, rows: Rows) -> PredictResult:
    """Each instance's prediction from its rows of the forward pass, explained."""
    loaded, task, samples = prepared.loaded, prepared.task, prepared.samples
    spec = loaded.specs.tasks[task]
    values, routing = rows.values, rows.routing
    check_finite(task, rows.finite, prepared.batched)
    ranges = loaded.model.training_ranges.get(task, {})
    calib, shift = loaded.model.calibration.get(task), loaded.model.shift.get(task)
    PREDICTIONS.labels(task=task).inc(len(samples))

    predictions, present, missing = [], set(), set()
    for i, sample in enumerate(samples):
        used = [m for m in spec.modalities if m in routing and routing[m][2][i]]
        absent = [m for m in spec.modalities if m not in used]
        routes = {}
        for m in used:
            experts, weights = routing[m][0][i], routing[m][1][i]
            routes[m] = {"experts": experts, "weights": [round(w, 6) for w in weights]}
            for e in experts:
                EXPERT_SELECTIONS.labels(modality=m, expert=str(e)).inc()
        for m in used:
            MODALITY_PRESENCE.labels(task=task, modality=m, state="present").inc()
        for m in absent:
            MODALITY_PRESENCE.labels(task=task, modality=m, state="missing").inc()
        present.update(used)
        missing.update(absent)
        judged = judge(spec.head, calib, shift, rows, i)
        if judged["shift"] is not None and not judged["shift"]["in_distribution"]:
            SHIFTED.labels(task=task).inc()
        predictions.append(
            {
                "id": sample["id"],
                "output": head_output(spec.head, values[i]),
                **judged,
                "modalities": {
                    "used": used,
                    "missing": absent,
                    "ignored": sorted(m for m in sample["modalities"] if m not in spec.modalities),
                },
                "routing": routes,
                "out_of_training_range": outside_ranges(prepared.items[i], loaded.specs, ranges)[0],
            }
        )
    return PredictResult(
        task, loaded.id, loaded.cursor_of(task), predictions, sorted(present), sorted(missing)
    )
