"""A task's model card, filled by the system when the task is introduced: what it was trained on
(counts, label balance, modality presence; the caller adds dataset ids and digests), how good it is
on the test split (overall and per modality-missingness pattern), how well calibrated (ECE before
and after, the conformal sets' empirical coverage), plus what an admin writes (intended use,
limitations). Plain JSON; `card_markdown` renders it for people.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flame_core.calibration import calibrated, prediction_set
from flame_core.continual import ContinualFlame
from flame_core.heads import predict_outputs
from flame_core.metrics import task_metrics
from flame_core.task_stats import labelled, task_outputs

MIN_SUBGROUP = 20  # patterns with fewer test samples are counted but not scored


def describe_data(samples: Sequence[dict[str, Any]], cl: ContinualFlame, task: str) -> dict[str, Any]:
    """Counts, label balance and the share of samples with each of the task's modalities."""
    spec = cl.specs.tasks[task]
    rows = labelled(samples, task)
    labels = (
        Counter(str(s["labels"][task]) for s in rows) if spec.head.type in ("binary", "multiclass") else {}
    )
    presence = {m: sum(m in s["modalities"] for s in rows) / max(len(rows), 1) for m in spec.modalities}
    return {"n": len(rows), "label_counts": dict(sorted(labels.items())), "modality_presence": presence}


def _outputs(cl: ContinualFlame, samples: list[dict[str, Any]], task: str) -> tuple[np.ndarray, ...]:
    head, calib = cl.specs.tasks[task].head, cl.calibration.get(task)
    got = task_outputs(cl, samples, task)
    raw = predict_outputs(head, got["logits"]).double().numpy()
    cal = calibrated(head, got["logits"], calib).double().numpy()
    return raw, cal, got["labels"].numpy()


def _covered(head: Any, value: Any, label: Any, calib: Mapping[str, Any]) -> float:
    decided = prediction_set(head, value, calib)
    if head.type == "multilabel":
        return float(
            np.mean([decided["labels"][str(j)] != ("no" if y else "yes") for j, y in enumerate(label)])
        )
    if head.type == "regression":
        low, high = decided["interval"]
        return float(low <= label <= high)
    return float(int(label) in decided["set"])


def task_card(
    cl: ContinualFlame, task: str, *, train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The system-filled card of `task` (call when its stage ends; `test` may be the validation split
    when there is no test split, and the card says which in `evaluated_on` set by the caller)."""
    head, spec = cl.specs.tasks[task].head, cl.specs.tasks[task]
    rows = labelled(test, task)
    card: dict[str, Any] = {
        "task": task,
        "head": head.to_dict(),
        "modalities": list(spec.modalities),
        "data": {"train": describe_data(train, cl, task), "test": describe_data(test, cl, task)},
    }
    if not rows:
        return card
    raw, cal, labels = _outputs(cl, rows, task)
    card["metrics"] = task_metrics(head, raw, labels)
    calib = cl.calibration.get(task)
    if calib is not None:
        coverage = float(
            np.mean([_covered(head, v.tolist(), y, calib) for v, y in zip(cal, labels, strict=True)])
        )
        card["calibration"] = {
            "method": calib["method"],
            "temperature": calib["temperature"],
            "ece_before": calib["ece_before"],
            "ece_after": calib["ece_after"],
            "target_coverage": calib["coverage"],
            "test_coverage": coverage,
        }
    patterns: dict[str, list[int]] = {}
    for i, s in enumerate(rows):
        key = "+".join(m for m in spec.modalities if m in s["modalities"]) or "none"
        patterns.setdefault(key, []).append(i)
    card["subgroups"] = {
        key: {
            "n": len(idx),
            **(task_metrics(head, raw[idx], labels[idx]) if len(idx) >= MIN_SUBGROUP else {}),
        }
        for key, idx in sorted(patterns.items(), key=lambda kv: -len(kv[1]))
    }
    return card


def _value(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown, for people (the JSON is the source)."""
    lines = [f"# Model card: {card.get('task', '?')}", ""]
    for key, title in (("intended_use", "Intended use"), ("limitations", "Limitations")):
        lines += [f"## {title}", "", str(card.get(key) or "_not written yet (PATCH /tasks/{name})_"), ""]
    lines += ["## Served by", "", f"model version {card.get('version')}, cursor {card.get('cursor')}", ""]
    head = card.get("head") or {}
    lines += ["## Task", "", f"{head.get('type', '?')} head over {', '.join(card.get('modalities', []))}", ""]
    data = card.get("data") or {}
    lines += ["## Data", ""]
    for split, info in data.items():
        if isinstance(info, Mapping):
            shown = ", ".join(f"{k}: {_value(v)}" for k, v in info.items())
            lines.append(f"- {split}: {shown}")
    lines.append("")
    for key, title in (("metrics", "Metrics (test)"), ("calibration", "Calibration")):
        if card.get(key):
            lines += [f"## {title}", ""] + [f"- {k}: {_value(v)}" for k, v in card[key].items()] + [""]
    if card.get("subgroups"):
        lines += [
            "## By modality-missingness pattern (test)",
            "",
            "| present modalities | metrics |",
            "|---|---|",
        ]
        for key, info in card["subgroups"].items():
            lines.append(f"| {key} | {', '.join(f'{k}: {_value(v)}' for k, v in info.items())} |")
        lines.append("")
    return "\n".join(lines)
