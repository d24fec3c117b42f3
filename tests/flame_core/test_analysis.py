"""Spectra, routing fingerprints and task affinity on a tiny model trained for a few steps."""

import copy

import numpy as np
import pytest
import torch

from flame_core.analysis import (
    Fingerprint,
    expert_spectra,
    is_expert_weight,
    routing_fingerprints,
    task_affinity,
)
from flame_core.collate import collate
from flame_core.components import as_matrix, truncate
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.specs import SpecSet
from flame_core.training import batch_loss

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
TOK = TINY.tokenizer()
MODS = {
    "vitals": {"kind": "timeseries", "dim": 2},
    "labs": {"kind": "tabular", "dim": 3},
    "notes": {"kind": "text"},
}
TASKS = [
    {"name": "a", "modalities": ["vitals", "labs"], "head": {"type": "binary"}},
    {"name": "b", "modalities": ["labs", "notes"], "head": {"type": "multiclass", "classes": 3}},
    {"name": "c", "modalities": ["notes"], "head": {"type": "binary"}},
]
SPECS = SpecSet.from_dict({"modalities": MODS, "tasks": TASKS})
N = 40


def samples(n: int, seed: int) -> list[dict]:
    """Every 5th sample lacks vitals; only even samples are labelled for b."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = float(rng.normal())
        t = np.sort(rng.uniform(0, 24, size=3)).tolist()
        mods = {
            "vitals": {"times": t, "values": [[r + float(rng.normal(0, 0.5)), None] for _ in t]},
            "labs": {"values": [r, float(rng.normal()), None]},
            "notes": {"text": "fever sepsis" if r > 0 else "stable calm"},
        }
        if i % 5 == 0:
            del mods["vitals"]
        labels = {"a": int(r > 0), "b": int(r > 0.5) + int(r > -0.5) if i % 2 == 0 else None}
        out.append({"id": str(i), "modalities": mods, "labels": {**labels, "c": int(r < 0), "d": r}})
    return out


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_flame(TINY, SPECS)
    batch = collate(samples(N, 0), SPECS, tokenizer=TOK)
    model.train()
    for _ in range(12):  # plain gradient steps: torch.optim's first use imports dynamo (seconds)
        model.zero_grad()
        batch_loss(model, batch, SPECS, list(SPECS.tasks)).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
    model.eval()
    yield model, batch
    torch.set_num_threads(threads)


def test_spectra_curves_are_monotone_normalised_and_ranks_ordered(trained):
    model, batch = trained
    res = expert_spectra(model, model, batch, list(SPECS.tasks))
    params = dict(model.named_parameters())
    assert sorted(res) == sorted(n for n in params if is_expert_weight(n))
    assert len(res) == TINY.n_blocks * TINY.n_experts * 3
    assert any(r.routed for r in res.values())
    for name, r in res.items():
        assert r.shape == tuple(as_matrix(params[name]).shape)
        if not r.routed:
            continue
        assert list(r.energies) == ["input", "weight", "data"]
        assert len(r.energies["input"]) == r.shape[1]
        assert len(r.energies["weight"]) == len(r.energies["data"]) == min(r.shape)
        for lens in r.energies:
            cum = r.cumulative(lens)
            assert np.all(np.diff(cum) >= -1e-12) and cum[-1] == 1.0 and cum.min() >= 0.0
            ranks = [r.rank(lens, t) for t in (0.9, 0.95, 0.99)]
            assert 1 <= ranks[0] <= ranks[1] <= ranks[2] <= len(cum)
            assert cum[ranks[0] - 1] >= 0.9 - 1e-9 and (ranks[0] == 1 or cum[ranks[0] - 2] < 0.9)
    # conv, fc1 and fc2 of one expert see the same routed tokens
    for e in range(TINY.n_experts):
        rows = {res[f"blocks.0.moe.experts.{e}.{w}.weight"].rows for w in ("conv", "fc1", "fc2")}
        assert len(rows) == 1


def test_data_aware_curve_is_the_energy_kept_on_the_routed_inputs(trained):
    model, batch = trained
    tasks = list(SPECS.tasks)
    res = expert_spectra(model, model, batch, tasks)
    name = max((n for n in res if n.endswith("fc1.weight")), key=lambda n: res[n].rows)
    expert = model.blocks[0].moe.experts[int(name.split(".")[4])]
    seen: list[torch.Tensor] = []
    expert.observe = lambda _win, h, _u: seen.append(h.detach().double().clone())
    try:
        with torch.no_grad():
            model(batch, tasks)
    finally:
        expert.observe = None
    x = torch.cat(seen)  # (N, d): the fc1 inputs routed to this expert
    assert x.shape[0] == res[name].rows
    w = expert.fc1.weight.detach().double()
    c = x.T @ x / x.shape[0]
    evals = torch.linalg.eigvalsh(c).flip(0).numpy()
    assert np.allclose(res[name].energies["input"], evals, atol=1e-5 * evals[0])
    cum = res[name].cumulative("data")
    total = (w @ x.T).pow(2).sum()
    for r in (1, 2, 4):
        kept = truncate(w, r, c).materialise()
        direct = float((kept @ x.T).pow(2).sum() / total)
        assert abs(cum[r - 1] - direct) < 1e-4
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        svd_r = u[:, :r] @ torch.diag(s[:r]) @ vh[:r]  # weight-only truncation keeps no more on X
        assert float((svd_r @ x.T).pow(2).sum() / total) <= cum[r - 1] + 1e-6


def test_an_expert_never_routed_to_is_reported_not_crashed(trained):
    model, batch = trained
    blocked = copy.deepcopy(model)
    with torch.no_grad():
        for router in blocked.blocks[0].routers.values():
            router.w_gate[3] = 1e3  # laplace logits -||z - w_e||: expert 3 is always last
    res = expert_spectra(blocked, blocked, batch, list(SPECS.tasks))
    for w in ("conv", "fc1", "fc2"):
        r = res[f"blocks.0.moe.experts.3.{w}.weight"]
        assert r.rows == 0 and not r.routed and list(r.energies) == ["weight"]
        assert r.cumulative("weight")[-1] == 1.0 and r.to_dict()["routed"] is False
        with pytest.raises(ValueError, match="never routed"):
            r.cumulative("data")
    assert res["blocks.0.moe.experts.0.fc1.weight"].routed
    fps = routing_fingerprints(blocked, batch, list(SPECS.tasks))
    assert all(fp.activation[3] == 0.0 for by_mod in fps.values() for fp in by_mod.values())


def test_continual_spectra_read_the_effective_weight_at_the_cursor(trained):
    model, _ = trained
    cl = ContinualFlame(copy.deepcopy(model))
    new = SpecSet.from_dict(
        {
            "modalities": {"labs": MODS["labs"]},
            "tasks": [{"name": "d", "modalities": ["labs"], "head": {"type": "regression"}}],
        }
    )
    cl.begin_stage(new)
    name = "blocks.0.moe.experts.1.fc2.weight"
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        cl.live_deltas[name.replace(".", "__")].copy_(torch.randn(16, 32, generator=gen))
    cl.end_stage(rank=2)
    batch = collate(samples(N, 0), cl.specs, tokenizer=TOK)
    base = dict(cl.model.named_parameters())[name].detach()
    at_d, at_a = expert_spectra(cl.model, cl, batch, ["d"]), expert_spectra(cl.model, cl, batch, ["a"])
    both = expert_spectra(cl.model, cl, batch, ["a", "d"])  # C pooled over cursors 0 and 1
    assert any(r.routed for r in at_d.values()) and any(r.routed for r in at_a.values())
    assert all(both[n].rows == at_a[n].rows + at_d[n].rows for n in both)
    now, before = at_d[name].energies["weight"], at_a[name].energies["weight"]
    assert np.allclose(both[name].energies["weight"], now)  # W at the latest cursor among the tasks
    effective = base.double() + cl.stages[1].deltas[name].materialise().double()
    assert np.allclose(now, torch.linalg.svdvals(effective).pow(2).numpy(), rtol=1e-4)
    assert np.allclose(before, torch.linalg.svdvals(base.double()).pow(2).numpy(), rtol=1e-4)
    assert not np.allclose(now, before, rtol=1e-2)


def test_fingerprints_sum_to_k_and_1_over_present_labelled_samples(trained):
    model, batch = trained
    fps = routing_fingerprints(model, batch, list(SPECS.tasks))
    assert list(fps) == ["a", "b", "c"]
    for task, by_mod in fps.items():
        assert list(by_mod) == [m for m in MODS if m in SPECS.tasks[task].modalities]
        for fp in by_mod.values():
            assert fp.activation.sum() == pytest.approx(TINY.top_k)
            assert fp.mean_gate.sum() == pytest.approx(1.0)
            assert fp.activation.min() >= 0 and fp.activation.max() <= 1
            assert np.all(fp.gate_when_active <= 1 + 1e-9) and fp.usage.sum() == pytest.approx(1.0)
    assert fps["a"]["vitals"].n == sum(1 for i in range(N) if i % 5) and fps["a"]["labs"].n == N
    assert fps["b"]["labs"].n == N // 2  # only samples labelled for b count for b
    with torch.no_grad():
        route = model(batch, ["a"]).routing["vitals"]
    chosen = route.experts[route.present]
    direct = [float((chosen == e).any(1).float().mean()) for e in range(TINY.n_experts)]
    assert np.allclose(fps["a"]["vitals"].activation, direct)
    chunked = routing_fingerprints(model, batch, list(SPECS.tasks), chunk=7)
    for task, by_mod in fps.items():
        for m, fp in by_mod.items():
            assert chunked[task][m].n == fp.n
            assert np.allclose(chunked[task][m].activation, fp.activation, atol=1e-6)
            assert np.allclose(chunked[task][m].mean_gate, fp.mean_gate, atol=1e-5)


def test_affinity_is_symmetric_unit_diagonal_and_ranks_pairs(trained):
    model, batch = trained
    aff = task_affinity(routing_fingerprints(model, batch, list(SPECS.tasks)))
    assert aff.tasks == ["a", "b", "c"]
    assert np.allclose(aff.matrix, aff.matrix.T) and np.allclose(np.diag(aff.matrix), 1.0)
    assert aff.matrix.min() >= 0 and aff.matrix.max() <= 1 + 1e-12
    assert len(aff.pairs) == 3 and [p.affinity for p in aff.pairs] == sorted(
        (p.affinity for p in aff.pairs), reverse=True
    )
    shared = {(p.a, p.b): p.shared for p in aff.pairs}
    assert shared[("a", "b")] == ("labs",) and shared[("a", "c")] == ()


def _fp(act: list[float]) -> Fingerprint:
    a = np.array(act, dtype=float)
    return Fingerprint(1, a, a / a.sum())


def test_affinity_values_on_hand_made_fingerprints():
    fps = {
        "same1": {"m": _fp([1, 1, 0, 0])},
        "same2": {"m": _fp([1, 1, 0, 0])},
        "disjoint": {"x": _fp([0, 0, 1, 1])},
        "half": {"m": _fp([1, 0, 1, 0])},
        "two": {"m": _fp([1, 1, 0, 0]), "x": _fp([0, 0, 1, 1])},
        "empty": {},
    }
    aff = task_affinity(fps)
    assert "empty" not in aff.tasks
    value = {(p.a, p.b): p for p in aff.pairs}
    assert value[("same1", "same2")].affinity == pytest.approx(1.0)
    assert value[("same1", "disjoint")].affinity == pytest.approx(0.0)
    assert value[("same1", "half")].affinity == pytest.approx(0.5)
    assert value[("same1", "half")].shared_overlap == pytest.approx(0.5)
    assert value[("same1", "two")].affinity == pytest.approx(0.5)
    assert value[("same1", "two")].shared_overlap == pytest.approx(1.0)
    assert np.isnan(value[("same1", "disjoint")].shared_overlap)
    assert aff.pairs[0].affinity == pytest.approx(1.0) and aff.pairs[-1].affinity == pytest.approx(0.0)
