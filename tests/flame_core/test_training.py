import numpy as np
import pytest
import torch

from flame_core.checkpoint import load_checkpoint, save_checkpoint
from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.specs import SpecSet
from flame_core.training import TrainConfig, evaluate, fit, labelled_tasks, predict_batch, score, train

SPEC = SpecSet.from_dict(
    {
        "modalities": {"vitals": {"kind": "timeseries", "dim": 2}, "labs": {"kind": "tabular", "dim": 3}},
        "tasks": [
            {"name": "death", "modalities": ["vitals", "labs"], "head": {"type": "binary"}},
            {"name": "stay", "modalities": ["labs"], "head": {"type": "regression"}},
        ],
    }
)
TINY = FlameConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2)


def make_samples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        risk = rng.normal()
        t = np.sort(rng.uniform(0, 48, size=rng.integers(2, 6)))
        vit = [
            [float(risk + rng.normal(0, 0.3)), None if rng.random() < 0.3 else float(rng.normal())] for _ in t
        ]
        labs = [float(risk + rng.normal(0, 0.3)), None, float(rng.normal())]
        mods: dict = {"labs": {"values": labs}}
        if rng.random() < 0.7:
            mods["vitals"] = {"times": t.tolist(), "values": vit}
        out.append(
            {"id": f"p{i}", "modalities": mods, "labels": {"death": int(risk > 0), "stay": float(2 * risk)}}
        )
    return out


@pytest.fixture(scope="module")
def trained():
    train, val = make_samples(240, 0), make_samples(80, 1)
    model, result = fit(
        SPEC,
        train,
        val,
        model_config=TINY,
        train_config=TrainConfig(epochs=8, batch_size=32, lr=5e-3, progress=False, device="cpu"),
    )
    return model, result, val


def test_labelled_tasks_follow_the_labels():
    samples = make_samples(3, 0)
    samples[0]["labels"] = {"death": 1}
    for s in samples[1:]:
        s["labels"] = {"death": 0, "stay": None}
    assert labelled_tasks(samples, SPEC) == ["death"]


def test_multitask_training_learns_both_tasks(trained):
    model, result, val = trained
    metrics = evaluate(model, SPEC, val)
    assert metrics["death"]["auroc"] > 0.85
    assert metrics["stay"]["mse"] < 2.0  # label variance is about 4
    first, best = result.history[0], result.history[result.best_epoch - 1]
    assert best["loss"] < first["loss"]
    assert result.samples_per_s > 0


def test_checkpoint_round_trip_is_bit_exact(trained, tmp_path):
    model, _, val = trained
    save_checkpoint(tmp_path / "ckpt", model, SPEC, extra={"note": "x"})
    loaded, specs, extra = load_checkpoint(tmp_path / "ckpt")
    assert specs.to_dict() == SPEC.to_dict() and extra == {"note": "x"}
    batch = collate(val, SPEC)
    a = predict_batch(model.cpu(), batch, SPEC, ["death", "stay"])
    b = predict_batch(loaded, batch, SPEC, ["death", "stay"])
    for t in a:
        assert torch.equal(torch.from_numpy(a[t]), torch.from_numpy(b[t]))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)


def test_keep_initial_keeps_the_starting_weights_when_no_epoch_beats_them(trained):
    model, _, val = trained
    start = {k: v.clone() for k, v in model.state_dict().items()}
    base = evaluate(model, SPEC, val)
    # A learning rate this large wrecks the model in one epoch; the starting weights must survive.
    bad = TrainConfig(epochs=1, batch_size=32, lr=50.0, progress=False, device="cpu")
    result = train(model, SPEC, make_samples(240, 0), val, bad, keep_initial=True)
    assert result.best_epoch == 0
    assert result.history[0]["val_score"] < score(base, SPEC)
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
