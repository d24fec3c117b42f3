"""CRAM baseline: adaptive-rank novel slots from the buffer, centroid mixing, orthogonality penalty."""

import math

import pytest
import torch

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from flame_core.strategies import build_strategy
from flame_core.strategies.cram import instantiate, orthonormal_rows
from flame_core.stream import parse_stream, run_stream
from flame_core.training import TrainConfig

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
FAST = TrainConfig(epochs=2, batch_size=32, progress=False, device="cpu", patience=0)


def test_instantiate_keeps_strong_novel_directions_within_the_rank_bounds():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(12, 6))
    v, _ = torch.linalg.qr(torch.randn(20, 6))
    sig = torch.tensor([5.0, 4.0, 3.0, 0.2, 0.1, 0.05])
    buffer = u @ torch.diag(sig) @ v.T
    b, a = instantiate(buffer, torch.zeros(0, 20), tau_alloc=0.08, tau_novel=0.99, r_min=1, r_max=10)
    assert a.shape[0] == 3  # the three sigmas above 0.08 * sigma_1
    assert torch.allclose(b @ a, u[:, :3] @ torch.diag(sig[:3]) @ v[:, :3].T, atol=1e-5)
    # An old slot that already spans the top direction: that direction is not novel any more.
    old = orthonormal_rows([v[:, :1].T], 20)
    b, a = instantiate(buffer, old, tau_alloc=0.08, tau_novel=0.99, r_min=1, r_max=10)
    assert a.shape[0] == 2 and torch.allclose(a @ old.T, torch.zeros(2, 1), atol=1e-5)
    b, a = instantiate(buffer, torch.zeros(0, 20), tau_alloc=0.08, tau_novel=0.99, r_min=4, r_max=5)
    assert a.shape[0] == 4  # padded up to r_min
    b, a = instantiate(buffer, torch.zeros(0, 20), tau_alloc=0.0, tau_novel=0.99, r_min=1, r_max=2)
    assert a.shape[0] == 2  # capped at r_max


@pytest.fixture(scope="module")
def data():
    return load_benchmark("synthetic-icu", seed=0, n=200)


def test_stream_mixes_slots_by_centroid_and_reports_ranks(data):
    stages = parse_stream("mortality;los;acuity")
    torch.manual_seed(0)
    strategy = build_strategy("cram", r_min=2, r_max=4)
    res = run_stream(strategy, data, stages, model_config=TINY, train_config=FAST)
    assert [set(m) for m in res.matrix] == [
        {"mortality"},
        {"mortality", "los"},
        {"mortality", "los", "acuity"},
    ]
    assert all(not math.isnan(v) for m in res.matrix for v in m.values())
    net = strategy.net
    assert len(net.slots) == len(net.centroids) == 3 and net.slots[0] == {}
    assert all(2 <= info["max_rank"] <= 4 for info in res.info[1:])
    w = net.mix(net.centroids[1])
    assert w.shape == (3,) and float(w.sum()) == pytest.approx(1.0) and int(w.argmax()) == 1
    assert not net.buffer and not net.new_b  # nothing of an open stage is left behind
