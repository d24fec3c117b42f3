"""Prediction as plain functions: parse the body, validate each instance, one forward, shape outputs.

Kept apart from the router so the steps are testable and the route stays thin. Nothing here logs or
stores payloads; only modality names and counts leave this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from flame_core.collate import collate
from flame_core.heads import predict_outputs
from flame_core.specs import HeadSpec
from flame_core.validation import SampleInvalid, validate_sample
from service.errors import PayloadInvalid
from service.inference.host import LoadedVersion
from service.observability import (
    EXPERT_SELECTIONS,
    MODALITY_PRESENCE,
    PREDICT_BATCH_SIZE,
    PREDICT_DURATION,
    QUEUE_DEPTH,
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


def head_output(head: HeadSpec, value: torch.Tensor) -> dict[str, Any]:
    """The caller-facing output of one instance from `predict_outputs`' row."""
    if head.type == "binary":
        p = float(value)
        label = int(p >= 0.5)
        out: dict[str, Any] = {"type": "binary", "probability": p, "label": label}
        if head.labels:
            out["class_name"] = head.labels[label]
        return out
    if head.type == "multiclass":
        probs = [float(v) for v in value]
        label = max(range(len(probs)), key=probs.__getitem__)
        out = {"type": "multiclass", "probabilities": probs, "label": label}
        if head.labels:
            out["class_name"] = head.labels[label]
        return out
    if head.type == "multilabel":
        names = list(head.labels) or [str(j) for j in range(head.classes)]
        probs = {n: float(v) for n, v in zip(names, value, strict=True)}
        return {
            "type": "multilabel",
            "probabilities": probs,
            "labels": [n for n, p in probs.items() if p >= 0.5],
        }
    return {"type": "regression", "value": float(value)}


def predict(*, loaded: LoadedVersion, task: str, body: Any, max_instances: int) -> PredictResult:
    """Validate, run one forward pass over the request's instances, and explain each prediction."""
    check_task(loaded, task)
    t0 = time.perf_counter()
    items, batched = instances_of(body, max_instances)
    samples = validate_instances(loaded, task, items, batched)
    t1 = time.perf_counter()
    PREDICT_DURATION.labels(task=task, stage="validate").observe(t1 - t0)

    spec = loaded.specs.tasks[task]
    QUEUE_DEPTH.inc()
    try:
        batch = collate(samples, loaded.specs, tasks=[task], tokenizer=loaded.tokenizer)
        out = loaded.forward(batch, task)
        values = predict_outputs(spec.head, out.outputs[task]).cpu()
        routing = {m: (r.experts.cpu(), r.weights.cpu(), r.present.cpu()) for m, r in out.routing.items()}
    finally:
        QUEUE_DEPTH.dec()
    PREDICT_DURATION.labels(task=task, stage="forward").observe(time.perf_counter() - t1)
    PREDICT_BATCH_SIZE.observe(len(samples))

    predictions, present, missing = [], set(), set()
    for i, sample in enumerate(samples):
        used = [m for m in spec.modalities if m in routing and bool(routing[m][2][i])]
        absent = [m for m in spec.modalities if m not in used]
        routes = {}
        for m in used:
            experts, weights = routing[m][0][i].tolist(), routing[m][1][i].tolist()
            routes[m] = {"experts": experts, "weights": [round(w, 6) for w in weights]}
            for e in experts:
                EXPERT_SELECTIONS.labels(modality=m, expert=str(e)).inc()
        for m in used:
            MODALITY_PRESENCE.labels(task=task, modality=m, state="present").inc()
        for m in absent:
            MODALITY_PRESENCE.labels(task=task, modality=m, state="missing").inc()
        present.update(used)
        missing.update(absent)
        predictions.append(
            {
                "id": sample["id"],
                "output": head_output(spec.head, values[i]),
                "modalities": {
                    "used": used,
                    "missing": absent,
                    "ignored": sorted(m for m in sample["modalities"] if m not in spec.modalities),
                },
                "routing": routes,
                "out_of_training_range": [],
            }
        )
    return PredictResult(
        task, loaded.id, loaded.cursor_of(task), predictions, sorted(present), sorted(missing)
    )
