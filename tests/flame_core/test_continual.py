"""FLAME continual learning: the structural no-forgetting guarantee, bit for bit."""

import numpy as np
import pytest
import torch

from flame_core.checkpoint import load_continual, save_continual
from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.continual import CapacityExceeded, ContinualFlame
from flame_core.model import build_flame
from flame_core.specs import SpecSet
from flame_core.statistics import routed_second_moments
from flame_core.training import TrainConfig, train

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
TOK = TINY.tokenizer()
MODS = {
    "vitals": {"kind": "timeseries", "dim": 2},
    "labs": {"kind": "tabular", "dim": 3},
    "notes": {"kind": "text"},
}
STAGES = [
    {"tasks": [{"name": "a", "modalities": ["vitals", "labs"], "head": {"type": "binary"}}]},
    {"tasks": [{"name": "b", "modalities": ["labs", "notes"], "head": {"type": "multiclass", "classes": 3}}]},
    {
        "tasks": [
            {"name": "c", "modalities": ["vitals", "notes"], "head": {"type": "binary"}},
            {"name": "d", "modalities": ["labs"], "head": {"type": "regression"}},
        ]
    },
]


def stage_specs(i: int) -> SpecSet:
    tasks = STAGES[i]["tasks"]
    used = {m for t in tasks for m in t["modalities"]}
    return SpecSet.from_dict({"modalities": {m: MODS[m] for m in MODS if m in used}, "tasks": tasks})


def samples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = float(rng.normal())
        t = np.sort(rng.uniform(0, 24, size=3)).tolist()
        out.append(
            {
                "id": str(i),
                "modalities": {
                    "vitals": {"times": t, "values": [[r + float(rng.normal(0, 0.5)), None] for _ in t]},
                    "labs": {"values": [r, float(rng.normal()), None]},
                    "notes": {"text": "fever sepsis" if r > 0 else "stable calm"},
                },
                "labels": {"a": int(r > 0), "b": int(r > 0.5) + int(r > -0.5), "c": int(r < 0), "d": r},
            }
        )
    return out


def run_stage(cl: ContinualFlame, i: int, data: list[dict], wd: float = 0.1, rank="auto") -> None:
    specs = stage_specs(i)
    params = cl.begin_stage(specs)
    tasks = list(specs.tasks)
    train(
        cl,
        cl.specs,
        data[:48],
        data[48:],
        TrainConfig(epochs=2, batch_size=16, weight_decay=wd, progress=False, device="cpu", seed=i),
        tasks=tasks,
        parameters=params,
    )
    batch = collate(data[:48], cl.specs, tasks=tasks, tokenizer=TOK)
    moments, _ = routed_second_moments(cl, cl.model, batch, tasks)
    cl.end_stage(rank=rank, energy=0.99, second_moments=moments)


@torch.no_grad()
def outputs(cl: ContinualFlame, batch, tasks) -> dict[str, torch.Tensor]:
    cl.eval()
    # One task per call, as the service predicts: the MoE packs the tokens of every modality in a call
    # into one matmul, so a call's other tasks may change the last bits (not the values, see below).
    single = {t: cl(batch, [t]).outputs[t] for t in tasks}
    together = cl(batch, tasks).outputs
    for t in tasks:
        assert torch.allclose(single[t], together[t], atol=1e-5)
    return single


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    torch.manual_seed(0)
    data = samples(64, 0)
    probe = collate(samples(20, 1), SpecSet.from_dict({"modalities": MODS, "tasks": []}), tokenizer=TOK)
    model = build_flame(TINY, stage_specs(0))
    train(
        model,
        model.specs,
        data[:48],
        data[48:],
        TrainConfig(epochs=2, batch_size=16, progress=False, device="cpu"),
    )
    cl = ContinualFlame(model)
    recorded = {"a": outputs(cl, probe, ["a"])["a"]}
    snapshots = []
    for i in (1, 2):
        run_stage(cl, i, data)
        now = outputs(cl, probe, list(cl.cursor))
        snapshots.append(now)
        for t in stage_specs(i).tasks:
            recorded[t] = now[t]
    path = save_continual(tmp_path_factory.mktemp("cl") / "ckpt", cl)
    return cl, probe, recorded, snapshots, path, data


def test_earlier_tasks_are_bit_identical_after_every_later_stage(stream):
    cl, probe, recorded, snapshots, _, _ = stream
    assert cl.cursor == {"a": 0, "b": 1, "c": 2, "d": 2}
    assert torch.equal(snapshots[0]["a"], recorded["a"])
    for t in ("a", "b"):
        assert torch.equal(snapshots[1][t], recorded[t]), t
    # The later stages did change something: the new tasks' deltas are non-zero.
    assert all(len(s.deltas) > 0 for s in cl.stages[1:])


def test_save_load_round_trip_is_bit_identical(stream):
    _, probe, recorded, _, path, _ = stream
    loaded, _ = load_continual(path)
    out = outputs(loaded, probe, list(recorded))
    for t, y in recorded.items():
        assert torch.equal(out[t], y), t


def test_later_stage_training_touches_only_its_own_parameters(stream):
    cl, probe, recorded, _, path, data = stream
    cl, _ = load_continual(path)
    frozen = {k: v.clone() for k, v in cl.state_dict().items()}
    stage_tensors = {
        (s.index, n): (d.a.clone() if hasattr(d, "a") else d.clone())
        for s in cl.stages
        for n, d in s.deltas.items()
    }
    extra = SpecSet.from_dict(
        {
            "modalities": {"labs": MODS["labs"]},
            "tasks": [{"name": "e", "modalities": ["labs"], "head": {"type": "binary"}}],
        }
    )
    params = cl.begin_stage(extra)
    live_ids = {id(p) for p in params}
    start = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1.0)
    batch = collate(data[:32], cl.specs, tasks=["e"], tokenizer=TOK)
    cl.train()
    for _ in range(5):
        out = cl(batch, ["e"])
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                out.outputs["e"].squeeze(1), batch.labels["e"].float()
            )
            + out.aux_loss
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in cl.state_dict().items():
        if k.startswith("live_") or k.startswith("model.heads.e."):
            continue
        assert torch.equal(v, frozen[k]), k
    for s in cl.stages:
        for n, d in s.deltas.items():
            assert torch.equal(d.a if hasattr(d, "a") else d, stage_tensors[(s.index, n)])
    assert all(not p.requires_grad for n, p in cl.model.named_parameters() if not n.startswith("heads.e."))
    assert sum(not torch.equal(p, s) for p, s in zip(params, start, strict=True)) > len(params) // 2
    assert len(live_ids) == len(params)
    after = outputs(cl, probe, ["a", "b", "c", "d"])
    for t in ("a", "b", "c", "d"):
        assert torch.equal(after[t], recorded[t]), t


def test_rank_budget_is_enforced_with_a_clear_error(stream):
    _, _, _, _, path, data = stream
    cl, _ = load_continual(path)
    used = max(cl.reserved_rank().values())
    cl.rank_budget = used  # the next stage of fixed rank 4 cannot fit on the busiest weight
    before = len(cl.stages)
    extra = SpecSet.from_dict(
        {
            "modalities": {"labs": MODS["labs"]},
            "tasks": [{"name": "e", "modalities": ["labs"], "head": {"type": "binary"}}],
        }
    )
    cl.begin_stage(extra)
    for p in cl.live_deltas.values():
        torch.nn.init.normal_(p)
    with pytest.raises(CapacityExceeded, match=f"budget {used}"):
        cl.end_stage(rank=4)
    assert len(cl.stages) == before
