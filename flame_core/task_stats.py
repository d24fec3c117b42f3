"""Per-task statistics fixed when a task's stage ends: calibration (temperature and split-conformal
quantiles, `flame_core.calibration`) on held-out labelled data, and the distribution of the routers'
pooled summaries on its training data (`flame_core.shift`).

Both are computed from the task's cursor model, which no later stage changes, and stored as JSON in
the model manifest beside the training ranges; a task that has them keeps them through every later
stage, so its calibrated outputs, sets and shift flags are as fixed as its raw outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from flame_core.calibration import check_calibration, fit_task_calibration
from flame_core.collate import collate
from flame_core.continual import ContinualFlame
from flame_core.shift import check_shift, fit_shift
from flame_core.specs import SpecSet

BATCH = 256
COVERAGE = 0.9


def labelled(samples: Sequence[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The samples with a label for `task`."""
    return [s for s in samples if isinstance(s.get("labels"), Mapping) and s["labels"].get(task) is not None]


def task_outputs(cl: ContinualFlame, samples: Sequence[dict[str, Any]], task: str) -> dict[str, Any]:
    """The task's cursor model over `samples` in batches: logits, labels and per-modality pooled
    summaries (float64) and presence."""
    model = cl.cursor_model(cl.cursor[task]).eval()
    tokenizer = cl.config.tokenizer()
    logits, labels = [], []
    summaries: dict[str, list[torch.Tensor]] = {}
    present: dict[str, list[torch.Tensor]] = {}
    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(samples), BATCH):
            batch = collate(list(samples[i : i + BATCH]), cl.specs, tasks=[task], tokenizer=tokenizer)
            out = model(batch.to(device), [task])
            logits.append(out.outputs[task].float().cpu())
            labels.append(batch.labels[task])
            for m, r in out.routing.items():
                if r.summary is None:
                    continue
                summaries.setdefault(m, []).append(r.summary.float().cpu())
                present.setdefault(m, []).append(r.present.cpu())
    return {
        "logits": torch.cat(logits),
        "labels": torch.cat(labels),
        "summaries": {m: torch.cat(v).numpy().astype(np.float64) for m, v in summaries.items()},
        "present": {m: torch.cat(v).numpy() for m, v in present.items()},
    }


def record_task_statistics(
    cl: ContinualFlame,
    train_samples: Sequence[dict[str, Any]],
    val_samples: Sequence[dict[str, Any]],
    tasks: Sequence[str],
    *,
    coverage: float = COVERAGE,
) -> None:
    """Fit and store (in `cl.calibration`, `cl.shift`) the statistics of each of `tasks` that has
    none yet: calibration on its labelled `val_samples`, summaries on its labelled `train_samples`.
    A task without labelled validation samples gets no calibration (its predictions say so)."""
    for task in tasks:
        head = cl.specs.tasks[task].head
        if task not in cl.calibration:
            val = labelled(val_samples, task)
            if len(val) >= 2:
                got = task_outputs(cl, val, task)
                cl.calibration[task] = fit_task_calibration(head, got["logits"], got["labels"], coverage)
        if task not in cl.shift:
            train = labelled(train_samples, task)
            if len(train) >= 2:
                got = task_outputs(cl, train, task)
                cl.shift[task] = fit_shift(got["summaries"], got["present"])


def check_task_statistics(calibration: Any, shift: Any, specs: SpecSet, where: str = "") -> None:
    """Raise ValueError naming the field if the manifest's statistics are malformed."""
    for name, value in (("calibration", calibration), ("shift", shift)):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}{name} must be an object of task -> statistics")
        unknown = [t for t in value if t not in specs.tasks]
        if unknown:
            raise ValueError(f"{where}{name}.{unknown[0]}: no such task; tasks: {sorted(specs.tasks)}")
    for task, calib in calibration.items():
        check_calibration(calib, specs.tasks[task].head, f"{where}calibration.{task}")
    for task, stats in shift.items():
        check_shift(stats, f"{where}shift.{task}")
