"""What a clinician reads beside each prediction, measured: per task, ECE before and after
temperature scaling, the conformal sets' coverage on the test split against the 90% target, how
often the model abstains, and how well the shift score tells in-distribution test patients from
shifted ones (AUROC).

    python bench/clinical.py [--quick] [--out bench/results/clinical.md]

The statistics are fitted exactly as a stage fits them (`flame_core.task_stats`): calibration on the
validation split, summaries on the training split; everything is then scored on the test split.
Shifts: synthetic-icu from another seed with labs and vitals offset by 1.5 units and half of the
notes dropped (another hospital, other missingness); support2 patients of one disease group (Coma)
kept out of training, validation and test, then scored as the shifted set.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flame_core.benchmarks import load_benchmark  # noqa: E402
from flame_core.calibration import calibrated, expected_calibration_error, prediction_set  # noqa: E402
from flame_core.config import FlameConfig  # noqa: E402
from flame_core.continual import ContinualFlame  # noqa: E402
from flame_core.heads import predict_outputs  # noqa: E402
from flame_core.shift import shift_scores  # noqa: E402
from flame_core.task_stats import record_task_statistics, task_outputs  # noqa: E402
from flame_core.training import TrainConfig, fit  # noqa: E402

CONFIG = FlameConfig(d_model=32, n_experts=4, expert_hidden=64, ts_ref_points=8, text_buckets=1024)
HELD_OUT_GROUP = "Coma"


def shifted_icu(samples: list[dict], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for s in copy.deepcopy(samples):
        mods = s["modalities"]
        if "notes" in mods and rng.random() < 0.5:
            del mods["notes"]
        if "labs" in mods:
            mods["labs"]["values"] = [None if v is None else v + 1.5 for v in mods["labs"]["values"]]
        if "vitals" in mods:
            rows = mods["vitals"]["values"]
            mods["vitals"]["values"] = [[None if v is None else v + 1.5 for v in row] for row in rows]
        if mods:
            out.append(s)
    return out


def score_task(cl: ContinualFlame, samples: list[dict], task: str) -> dict[str, Any]:
    """Raw and calibrated outputs, labels and shift scores, as the service computes them per batch."""
    head, calib, stats = cl.specs.tasks[task].head, cl.calibration[task], cl.shift.get(task)
    got = task_outputs(cl, samples, task)
    fitted = {m: v for m, v in got["summaries"].items() if stats is not None and m in stats["modalities"]}
    scores = shift_scores(stats, fitted, got["present"]) if fitted else [None] * len(samples)
    return {
        "raw": predict_outputs(head, got["logits"]).double().numpy(),
        "cal": calibrated(head, got["logits"], calib).double().numpy(),
        "labels": got["labels"].numpy(),
        "scores": scores,
    }


def evaluate(name: str, data: Any, shifted: list[dict], tasks: list[str], epochs: int) -> list[list[Any]]:
    specs = data.specs.subset(tasks)
    t0 = time.perf_counter()
    config = TrainConfig(epochs=epochs, seed=0, device="cpu", progress=False)
    model, _ = fit(specs, data.splits["train"], data.splits["val"], model_config=CONFIG, train_config=config)
    cl = ContinualFlame(model.cpu().eval())
    record_task_statistics(cl, data.splits["train"], data.splits["val"], tasks)
    print(f"{name}: trained and fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for task in tasks:
        head, calib = cl.specs.tasks[task].head, cl.calibration[task]
        test = [s for s in data.splits["test"] if (s.get("labels") or {}).get(task) is not None]
        got = score_task(cl, test, task)
        decided = [prediction_set(head, v.tolist(), calib) for v in got["cal"]]
        if head.type == "multilabel":
            truth = got["labels"].astype(int)
            hits = [
                [d["labels"][str(j)] != ("no" if y else "yes") for j, y in enumerate(row)]
                for d, row in zip(decided, truth, strict=True)
            ]
            coverage = float(np.mean(hits))
        else:
            coverage = float(
                np.mean([int(y) in d["set"] for y, d in zip(got["labels"], decided, strict=True)])
            )
        abstain = float(np.mean([d["abstain"] for d in decided]))
        moved = score_task(cl, shifted, task)["scores"]
        plain = [s for s in got["scores"] if s is not None]
        moved = [s for s in moved if s is not None]
        auroc = roc_auc_score([0] * len(plain) + [1] * len(moved), plain + moved) if plain and moved else None
        threshold = cl.shift[task]["threshold"]
        flagged = [np.mean([s > threshold for s in x]) for x in (plain, moved)]
        rows.append(
            [
                name,
                task,
                head.type,
                len(test),
                expected_calibration_error(got["raw"], got["labels"], head),
                expected_calibration_error(got["cal"], got["labels"], head),
                calib["temperature"],
                calib["coverage"],
                coverage,
                abstain,
                auroc,
                flagged[0],
                flagged[1],
            ]
        )
    return rows


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "clinical.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, epochs = (2000, 2) if args.quick else (5000, 5)
    icu = load_benchmark("synthetic-icu", n=n, seed=0)
    other = load_benchmark("synthetic-icu", n=n, seed=1).splits["test"]
    rows = evaluate(
        "synthetic-icu", icu, shifted_icu(other), ["mortality", "los", "phenotype", "acuity"], epochs
    )
    support = load_benchmark("support2", seed=0)
    group = support.specs.tasks["dzgroup"].head.labels.index(HELD_OUT_GROUP)

    def in_group(s: dict) -> bool:
        return (s.get("labels") or {}).get("dzgroup") == group

    held = [s for split in support.splits.values() for s in split if in_group(s)]
    for split in support.splits:
        support.splits[split] = [s for s in support.splits[split] if not in_group(s)]
    rows += evaluate("support2", support, held, ["death_hosp", "los", "dzgroup"], epochs)
    headers = [
        "benchmark",
        "task",
        "head",
        "test n",
        "ECE before",
        "ECE after",
        "temperature",
        "target coverage",
        "test coverage",
        "abstention rate",
        "shift AUROC",
        "flagged (test)",
        "flagged (shifted)",
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = (
        "# Calibration, conformal sets, abstention and the shift flag\n\n"
        + f"`python bench/clinical.py{' --quick' if args.quick else ''}`: {n} synthetic-icu patients "
        + "(shift: seed 1, labs and vitals +1.5, half the notes dropped), all support2 patients (shift: "
        + f"disease group {HELD_OUT_GROUP} held out); {epochs} epochs; statistics fitted as a stage fits "
        + "them (calibration on validation, summaries on training), scored on the test split. Multilabel "
        + "coverage is per label (the truth not excluded by that label's decision).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
