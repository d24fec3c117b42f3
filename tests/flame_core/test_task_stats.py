"""Per-task calibration, conformal sets and shift statistics on a trained synthetic-icu model:
coverage on the held-out test split is within 0.03 of the target, sets decide abstention, a shifted
copy of the data is told apart, and a later stage leaves an earlier task's statistics unchanged."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from flame_core.benchmarks import load_benchmark
from flame_core.calibration import calibrated, prediction_set
from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.shift import shift_score
from flame_core.specs import SpecSet
from flame_core.task_stats import check_task_statistics, record_task_statistics
from flame_core.training import TrainConfig, fit

TASKS = ["mortality", "acuity"]  # binary, multiclass
CONFIG = FlameConfig(d_model=32, n_experts=4, expert_hidden=64, ts_ref_points=8, text_buckets=1024)


@pytest.fixture(scope="module")
def icu():  # type: ignore[no-untyped-def]
    data = load_benchmark("synthetic-icu", n=5000, seed=0)  # val and test: 1,000 patients each
    specs = data.specs.subset(TASKS)
    train_config = TrainConfig(epochs=3, seed=0, device="cpu", progress=False)
    model, _ = fit(
        specs, data.splits["train"], data.splits["val"], model_config=CONFIG, train_config=train_config
    )
    cl = ContinualFlame(model.cpu().eval())
    record_task_statistics(cl, data.splits["train"], data.splits["val"], TASKS)
    return {"cl": cl, "data": data, "specs": specs}


def served(cl: ContinualFlame, samples: list[dict], task: str) -> dict:
    """What the service computes per instance: calibrated outputs, summaries and presence."""
    model = cl.cursor_model(cl.cursor[task]).eval()
    batch = collate(samples, cl.specs, tasks=[task], tokenizer=cl.config.tokenizer())
    with torch.inference_mode():
        out = model(batch, [task])
    head = cl.specs.tasks[task].head
    return {
        "values": calibrated(head, out.outputs[task], cl.calibration[task]).tolist(),
        "labels": batch.labels[task].tolist(),
        "summaries": {m: r.summary.tolist() for m, r in out.routing.items() if r.summary is not None},
        "present": {m: r.present.tolist() for m, r in out.routing.items()},
    }


def scores(cl: ContinualFlame, samples: list[dict], task: str) -> list[float]:
    got = served(cl, samples, task)
    out = []
    for i in range(len(samples)):
        s = {m: v[i] for m, v in got["summaries"].items()}
        p = {m: v[i] for m, v in got["present"].items()}
        out.append(shift_score(cl.shift[task], s, p))
    return out


@pytest.mark.parametrize("task", TASKS)
def test_sets_cover_the_held_out_test_split_and_decide_abstention(icu, task) -> None:  # type: ignore[no-untyped-def]
    cl = icu["cl"]
    calib = cl.calibration[task]
    assert calib["coverage"] == 0.9
    test = [s for s in icu["data"].splits["test"] if s["labels"].get(task) is not None]
    got = served(cl, test, task)
    head = cl.specs.tasks[task].head
    decided = [prediction_set(head, v, calib) for v in got["values"]]
    covered = np.mean([int(y) in d["set"] for y, d in zip(got["labels"], decided, strict=True)])
    assert abs(covered - 0.9) <= 0.03, covered
    assert all(d["abstain"] == (len(d["set"]) != 1) for d in decided)
    assert any(d["abstain"] for d in decided) and not all(d["abstain"] for d in decided)


def _with_regression(samples: list[dict]) -> list[dict]:
    """synthetic-icu with a regression task: the mean of a patient's observed labs, plus noise."""
    rng = np.random.default_rng(0)
    out = []
    for s in samples:
        labs = [v for v in (s["modalities"].get("labs") or {}).get("values", []) if v is not None]
        target = float(np.mean(labs)) + float(rng.normal(0, 0.3)) if labs else None
        out.append({**s, "labels": {**s["labels"], "labs_mean": target}})
    return out


def test_regression_intervals_cover_the_held_out_test_split() -> None:
    data = load_benchmark("synthetic-icu", n=5000, seed=0)
    d = data.specs.to_dict()
    d["tasks"] = [{"name": "labs_mean", "modalities": ["labs", "vitals"], "head": {"type": "regression"}}]
    specs = SpecSet.from_dict(d)
    splits = {k: _with_regression(v) for k, v in data.splits.items()}
    train_config = TrainConfig(epochs=3, seed=0, device="cpu", progress=False)
    model, _ = fit(specs, splits["train"], splits["val"], model_config=CONFIG, train_config=train_config)
    cl = ContinualFlame(model.cpu().eval())
    record_task_statistics(cl, splits["train"], splits["val"], ["labs_mean"])
    calib = cl.calibration["labs_mean"]
    assert calib["score"] == "abs_residual" and calib["temperature"] == 1.0 and calib["ece_before"] is None
    test = [s for s in splits["test"] if s["labels"]["labs_mean"] is not None]
    got = served(cl, test, "labs_mean")
    head = cl.specs.tasks["labs_mean"].head
    decided = [prediction_set(head, v, calib) for v in got["values"]]
    covered = np.mean(
        [lo <= y <= hi for y, d in zip(got["labels"], decided, strict=True) for lo, hi in [d["interval"]]]
    )
    assert abs(covered - 0.9) <= 0.03, covered
    assert not any(d["abstain"] for d in decided)


def test_calibration_is_stored_with_its_ece_before_and_after(icu) -> None:  # type: ignore[no-untyped-def]
    cl = icu["cl"]
    for task in TASKS:
        calib = cl.calibration[task]
        assert calib["temperature"] > 0 and 0 <= calib["ece_after"] <= 1 and 0 <= calib["ece_before"] <= 1
    check_task_statistics(cl.calibration, cl.shift, icu["specs"])
    json.dumps(cl.calibration)  # plain JSON, stored in the manifest as is
    json.dumps(cl.shift)


def _shifted(samples: list[dict]) -> list[dict]:
    """Another hospital: labs and vitals offset by 1.5 units, every note missing."""
    out = []
    for s in copy.deepcopy(samples):
        mods = s["modalities"]
        mods.pop("notes", None)
        if "labs" in mods:
            mods["labs"]["values"] = [None if v is None else v + 1.5 for v in mods["labs"]["values"]]
        if "vitals" in mods:
            vals = mods["vitals"]["values"]
            mods["vitals"]["values"] = [[None if v is None else v + 1.5 for v in row] for row in vals]
        out.append(s)
    return out


def test_the_shift_flag_tells_a_shifted_copy_apart(icu) -> None:  # type: ignore[no-untyped-def]
    cl = icu["cl"]
    other = load_benchmark("synthetic-icu", n=600, seed=1).splits["test"]
    for task in TASKS:
        # a patient left with no fitted modality (notes only, once notes are dropped) has no score
        plain = [x for x in scores(cl, other, task) if x is not None]
        moved = [x for x in scores(cl, _shifted(other), task) if x is not None]
        assert len(plain) > 100 and len(moved) > 100
        auroc = roc_auc_score([0] * len(plain) + [1] * len(moved), plain + moved)
        assert auroc >= 0.8, (task, auroc)
        threshold = cl.shift[task]["threshold"]
        assert np.mean([s > threshold for s in plain]) < 0.1  # another seed of the same hospital


def test_a_later_stage_keeps_earlier_statistics(icu) -> None:  # type: ignore[no-untyped-def]
    """`record_task_statistics` never refits a task that has statistics, whatever the data."""
    cl = icu["cl"]
    before = json.dumps([cl.calibration, cl.shift], sort_keys=True)
    other = load_benchmark("synthetic-icu", n=300, seed=5).splits
    record_task_statistics(cl, other["train"], other["val"], TASKS)
    assert json.dumps([cl.calibration, cl.shift], sort_keys=True) == before
