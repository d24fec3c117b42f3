"""PASs-MoE baseline: shared expert LoRAs, PAS-reweighted routing, importance-weighted stabilisation."""

import math

import pytest
import torch

from flame_core.benchmarks import load_benchmark
from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.model import build_flame
from flame_core.routing import Router
from flame_core.strategies import build_strategy
from flame_core.strategies.pas import PasFlame, PasStrategy
from flame_core.stream import parse_stream, run_stream
from flame_core.training import TrainConfig

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
FAST = TrainConfig(epochs=2, batch_size=32, progress=False, device="cpu", patience=0)


@pytest.fixture(scope="module")
def data():
    return load_benchmark("synthetic-icu", seed=0, n=200)


def test_untrained_adapters_leave_the_model_and_bias_routing_evenly(data):
    torch.manual_seed(0)
    specs = data.specs.subset(["mortality"])
    model = build_flame(TINY, specs)
    net = PasFlame(model, rank=4, beta=4.0)
    assert all(m.logit_bias is None for m in model.modules() if isinstance(m, Router))  # stage 0 as is
    net.hook_routers()
    assert len(net.a) == 3 * TINY.n_experts  # conv, fc1, fc2 of every expert
    batch = collate(data.splits["test"][:16], specs, tasks=["mortality"], tokenizer=TINY.tokenizer())
    model.eval()
    net.eval()
    with torch.no_grad():
        z = torch.randn(16, TINY.d_model)
        bias = net.pas_bias(0, z)
        assert bias.shape == (16, TINY.n_experts)
        assert float(bias.min()) >= 0.0 and float(bias.max()) <= 4.0  # beta * mean cos^2
        # B = 0: the effective expert weights are the base weights.
        assert all(torch.equal(w, dict(model.named_parameters())[n]) for n, w in net.overrides().items())
        routers = [m for m in model.modules() if isinstance(m, Router)]
        assert routers and all(r.logit_bias is not None for r in routers)
        out = net(batch, ["mortality"]).outputs["mortality"]
        assert torch.isfinite(out).all()


def test_penalty_is_zero_at_the_anchors_and_weights_important_rows(data):
    torch.manual_seed(0)
    strategy = PasStrategy(rank=4, lam=2.0, top_p=1.0)
    first = data.specs.subset(["mortality"])
    strategy.wrap(build_flame(TINY, first))
    params = strategy.begin_stage(data.specs.subset(["los"]))
    assert strategy.penalty() is None  # nothing consolidated yet
    with torch.no_grad():
        for b in strategy.net.b.values():
            b.normal_(0, 0.1)
    batch = collate(data.splits["train"][:64], strategy.net.specs, tasks=["los"], tokenizer=TINY.tokenizer())
    info = strategy.end_stage(batch, ["los"])
    assert info["importance_max"] > 0.0
    strategy.begin_stage(data.specs.subset(["acuity"]))
    assert float(strategy.penalty().detach()) == 0.0  # adapters sit exactly on their anchors
    key = max(strategy.importance, key=lambda k: float(strategy.importance[k].max()))
    row = int(strategy.importance[key].argmax())
    with torch.no_grad():
        strategy.net.a[key][row] += 1.0
    weights = strategy.weights()[key]
    fan_rows = sum(w.numel() for w in strategy.weights().values())
    assert float(strategy.penalty().detach()) == pytest.approx(
        2.0 * float(weights[row]) * strategy.net.a[key].shape[1] / fan_rows
    )
    assert {id(p) for p in strategy.net.a.values()} <= {id(p) for p in params}


def test_stream_runs_and_reports_parameters(data):
    stages = parse_stream("mortality;los;acuity")
    torch.manual_seed(0)
    res = run_stream(build_strategy("pas", rank=4), data, stages, model_config=TINY, train_config=FAST)
    assert [set(m) for m in res.matrix] == [
        {"mortality"},
        {"mortality", "los"},
        {"mortality", "los", "acuity"},
    ]
    assert all(not math.isnan(v) for m in res.matrix for v in m.values())
    assert res.stage_params[2] > 0 and res.serving_params[2] > res.serving_params[0]
