"""Online EWC: Fisher over shared parameters only, the penalty's value and gradient, and that it holds
the shared parameters closer to the previous stage's than plain fine-tuning does."""

import copy

import numpy as np
import pytest
import torch

from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.model import build_flame
from flame_core.specs import SpecSet
from flame_core.strategies import build_strategy
from flame_core.strategies.ewc import EwcStrategy, diagonal_fisher
from flame_core.training import TrainConfig, train

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
TOK = TINY.tokenizer()
MODS = {"vitals": {"kind": "timeseries", "dim": 2}, "labs": {"kind": "tabular", "dim": 3}}
STAGES = [
    [{"name": "a", "modalities": ["vitals", "labs"], "head": {"type": "binary"}}],
    [{"name": "b", "modalities": ["vitals", "labs"], "head": {"type": "binary"}}],
]


def stage_specs(i: int) -> SpecSet:
    return SpecSet.from_dict({"modalities": MODS, "tasks": STAGES[i]})


def samples(n: int, seed: int) -> list[dict]:
    """Task a depends on one latent, task b on an unrelated one: b pulls shared weights away from a."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r, s = float(rng.normal()), float(rng.normal())
        t = np.sort(rng.uniform(0, 24, size=3)).tolist()
        out.append(
            {
                "id": str(i),
                "modalities": {
                    "vitals": {"times": t, "values": [[r + float(rng.normal(0, 0.3)), s] for _ in t]},
                    "labs": {"values": [r, s, None]},
                },
                "labels": {"a": int(r > 0), "b": int(s * r > 0)},
            }
        )
    return out


DATA = samples(96, seed=3)
TRAIN, VAL = DATA[:64], DATA[64:]


def config(seed: int, epochs: int = 2) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=16, lr=5e-3, progress=False, device="cpu", seed=seed)


@pytest.fixture
def stage0():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = build_flame(TINY, stage_specs(0))
    train(model, model.specs, TRAIN, VAL, config(0), tasks=["a"])
    yield model
    torch.set_num_threads(threads)


def batch(model, tasks: list[str]):
    return collate(TRAIN, model.specs, tasks=tasks, tokenizer=TOK)


def test_fisher_is_over_shared_parameters_and_non_negative(stage0) -> None:
    strategy = build_strategy("ewc", lam=10.0)
    strategy.wrap(stage0)
    strategy.after_pretraining(batch(stage0, ["a"]), ["a"])
    shared = {n for n, _ in stage0.named_parameters() if not n.startswith("heads.")}
    assert set(strategy.fisher) == shared and set(strategy.anchor) == shared
    assert any(n.startswith("blocks.0.routers.") for n in shared)  # the shared routers are protected
    assert all(bool((f >= 0).all()) for f in strategy.fisher.values())
    assert sum(float(f.sum()) for f in strategy.fisher.values()) > 0
    assert all(p.requires_grad for p in stage0.parameters())  # flags restored after the Fisher pass
    assert stage0.training is False  # eval, as `train` leaves it
    value = strategy.penalty()
    assert value is not None and float(value.detach()) == 0.0  # at theta*


def test_penalty_value_and_gradient_after_perturbation(stage0) -> None:
    strategy = EwcStrategy(lam=10.0)
    strategy.wrap(stage0)
    strategy.after_pretraining(batch(stage0, ["a"]), ["a"])
    named = dict(stage0.named_parameters())
    gen = torch.Generator().manual_seed(0)
    shifts = {n: torch.randn(p.shape, generator=gen) * 0.1 for n, p in named.items()}
    with torch.no_grad():
        for n, p in named.items():
            p.add_(shifts[n])
    value = strategy.penalty()
    expected = 5.0 * sum(float((strategy.fisher[n] * shifts[n] ** 2).sum()) for n in strategy.fisher)
    assert value is not None and value.item() > 0
    assert value.item() == pytest.approx(expected, rel=1e-4)
    stage0.zero_grad()
    value.backward()
    for n, p in named.items():
        if n.startswith("heads."):
            assert p.grad is None  # heads are per task: never penalised
        else:
            torch.testing.assert_close(p.grad, 10.0 * strategy.fisher[n] * shifts[n], rtol=1e-4, atol=1e-9)


def test_online_merge_decays_the_old_fisher(stage0) -> None:
    one_batch = batch(stage0, ["a"]).select(torch.arange(32))  # one minibatch: the same Fisher each time
    first = diagonal_fisher(stage0, one_batch, ["a"])
    strategy = EwcStrategy(gamma=0.5)
    strategy.wrap(stage0)
    strategy.consolidate(one_batch, ["a"])
    strategy.consolidate(one_batch, ["a"])
    for n, f in first.items():
        torch.testing.assert_close(strategy.fisher[n], 1.5 * f, rtol=1e-4, atol=1e-10)


def weighted_drift(model, fisher, anchor) -> float:
    named = dict(model.named_parameters())
    return sum(float((fisher[n] * (named[n].detach() - anchor[n]) ** 2).sum()) for n in fisher)


def test_ewc_keeps_shared_weights_closer_than_finetune_and_still_learns(stage0) -> None:
    results = {}
    for name, opts in (("finetune", {}), ("ewc", {"lam": 1000.0})):
        strategy = build_strategy(name, **opts)
        module = strategy.wrap(copy.deepcopy(stage0))
        if name == "ewc":
            strategy.after_pretraining(batch(module, ["a"]), ["a"])
            fisher, anchor = strategy.fisher, strategy.anchor
        params = strategy.begin_stage(stage_specs(1))
        penalty = strategy.penalty if name == "ewc" else None
        fit = train(
            module,
            module.specs,
            TRAIN,
            VAL,
            config(1, epochs=4),
            tasks=["b"],
            parameters=params,
            penalty=penalty,
        )
        results[name] = (module, fit)
    drift = {name: weighted_drift(m, fisher, anchor) for name, (m, _) in results.items()}
    assert drift["ewc"] < 0.5 * drift["finetune"], drift
    losses = [h["loss"] for h in results["ewc"][1].history]
    assert losses[-1] < losses[0], losses  # the new task still trains under the penalty


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="lam"):
        EwcStrategy(lam=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        EwcStrategy(gamma=1.5)
    with pytest.raises(ValueError, match="lam"):
        EwcStrategy(lam="strong")
