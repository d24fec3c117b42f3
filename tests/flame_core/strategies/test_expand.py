"""Expert expansion: new experts and router rows per stage, old ones frozen, earlier tasks bit-exact."""

import numpy as np
import pytest
import torch

from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.model import build_flame
from flame_core.specs import SpecSet
from flame_core.strategies import build_strategy
from flame_core.strategies.expand import ExpandFlame, ExpandStrategy
from flame_core.training import TrainConfig, batch_loss, train

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
    [{"name": "a", "modalities": ["vitals", "labs"], "head": {"type": "binary"}}],
    [{"name": "b", "modalities": ["labs", "notes"], "head": {"type": "multiclass", "classes": 3}}],
    [{"name": "c", "modalities": ["vitals", "notes"], "head": {"type": "binary"}}],
]


def stage_specs(i: int) -> SpecSet:
    used = {m for t in STAGES[i] for m in t["modalities"]}
    return SpecSet.from_dict({"modalities": {m: MODS[m] for m in MODS if m in used}, "tasks": STAGES[i]})


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
                "labels": {"a": int(r > 0), "b": int(r > 0.5) + int(r > -0.5), "c": int(r < 0)},
            }
        )
    return out


DATA = samples(64, seed=1)


def config(seed: int, wd: float = 0.1, epochs: int = 2) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=16, weight_decay=wd, progress=False, device="cpu", seed=seed)


@pytest.fixture
def stage0():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    specs = stage_specs(0)
    model = build_flame(TINY, specs)
    train(model, specs, DATA[:48], DATA[48:], config(0), tasks=["a"])
    yield model
    torch.set_num_threads(threads)


def outputs(module, task: str) -> torch.Tensor:
    module.eval()
    batch = collate(DATA, module.specs, tasks=[task], tokenizer=TOK)
    with torch.no_grad():
        return module(batch, [task]).outputs[task].clone()


def run_stage(strategy: ExpandStrategy, i: int, wd: float = 0.1) -> list[torch.nn.Parameter]:
    params = strategy.begin_stage(stage_specs(i))
    tasks = [t["name"] for t in STAGES[i]]
    train(
        strategy.module,
        strategy.module.specs,
        DATA[:48],
        DATA[48:],
        config(i, wd),
        tasks=tasks,
        parameters=params,
    )
    batch = collate(DATA[:48], strategy.module.specs, tasks=tasks, tokenizer=TOK)
    strategy.end_stage(batch, tasks)
    return params


def test_cursor_zero_view_equals_the_base_model(stage0) -> None:
    expected = outputs(stage0, "a")
    module = build_strategy("expand").wrap(stage0)
    assert torch.equal(outputs(module, "a"), expected)


def test_stage_adds_experts_and_router_rows_and_trains_only_them(stage0) -> None:
    strategy = ExpandStrategy(n_new=3)
    ex = strategy.wrap(stage0)
    old_gate = stage0.blocks[0].routers["labs"].w_gate.detach().clone()
    old = {id(p) for p in ex.parameters()}
    params = strategy.begin_stage(stage_specs(1))
    assert ex.pool_size == [4, 7] and len(ex.added[0]) == 3
    heads = ex.router_heads["1"][0]
    assert set(heads) == {"labs", "notes"}  # one head per modality of the stage's tasks
    assert heads["labs"].w_gate.shape == (7, 16) and heads["notes"].w_gate.shape == (7, 16)
    assert torch.equal(heads["labs"].w_gate[:4], old_gate)  # old rows start from the previous head
    assert not torch.equal(heads["labs"].w_gate[4:], torch.zeros(3, 16))
    assert "notes" not in stage0.blocks[0].routers  # the unused base-pool router of a new modality is gone
    new = {id(p) for p in ex.parameters()} - old
    assert {id(p) for p in params} == new  # experts, router heads, head of b, notes encoder/attn/norms
    assert {id(p) for p in ex.parameters() if p.requires_grad} == new
    expected = sum(p.numel() for e in ex.added[0] for p in e.parameters()) + sum(
        p.numel() for p in heads.parameters()
    )
    expected += sum(p.numel() for p in stage0.heads["b"].parameters())
    expected += sum(p.numel() for p in stage0.encoders["notes"].parameters())
    expected += sum(
        p.numel()
        for mod in ("attn_norm", "attn", "moe_norm")
        for p in getattr(stage0.blocks[0], mod)["notes"].parameters()
    )
    assert strategy.stage_parameters() == expected
    assert strategy.serving_parameters() == sum(p.numel() for p in ex.parameters())


def test_old_weights_frozen_and_old_tasks_bit_exact(stage0) -> None:
    strategy = ExpandStrategy()
    ex = strategy.wrap(stage0)
    out_a = outputs(ex, "a")
    before = {k: v.clone() for k, v in ex.state_dict().items()}
    run_stage(strategy, 1, wd=0.5)
    after = ex.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # weight decay never touched them
    assert torch.equal(outputs(ex, "a"), out_a)
    out_b = outputs(ex, "b")
    mid = {k: v.clone() for k, v in ex.state_dict().items()}
    run_stage(strategy, 2, wd=0.5)
    assert ex.pool_size == [4, 6, 8]
    assert all(torch.equal(ex.state_dict()[k], v) for k, v in mid.items())
    assert torch.equal(outputs(ex, "a"), out_a)
    assert torch.equal(outputs(ex, "b"), out_b)
    both = ex(collate(DATA, ex.specs, tasks=["a", "c"], tokenizer=TOK), ["a", "c"])  # two cursors, one call
    assert torch.equal(both.outputs["a"], out_a) and set(both.outputs) == {"a", "c"}
    assert not any(p.requires_grad for p in ex.parameters())


def test_new_task_learns(stage0) -> None:
    strategy = ExpandStrategy()
    ex = strategy.wrap(stage0)
    params = strategy.begin_stage(stage_specs(1))
    batch = collate(DATA[:48], ex.specs, tasks=["b"], tokenizer=TOK)
    ex.eval()
    with torch.no_grad():
        start = batch_loss(ex, batch, ex.specs, ["b"]).item()
    result = train(ex, ex.specs, DATA[:48], DATA[48:], config(1, epochs=6), tasks=["b"], parameters=params)
    ex.eval()
    with torch.no_grad():
        end = batch_loss(ex, batch, ex.specs, ["b"]).item()
    assert end < start - 0.05, (start, end, result.history)


def test_bad_arguments(stage0) -> None:
    with pytest.raises(ValueError, match="n_new"):
        ExpandStrategy(n_new=0)
    ex = ExpandFlame(stage0)
    with pytest.raises(ValueError, match="n_new"):
        ex.begin_stage(stage_specs(1), n_new=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cursor"):
        ex.view(1)
    with pytest.raises(ValueError, match="unknown tasks"):
        ex(collate(DATA[:4], ex.specs, tasks=["a"], tokenizer=TOK), ["zzz"])
