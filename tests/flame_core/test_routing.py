import pytest
import torch

from flame_core.config import FlameConfig
from flame_core.model import build_flame
from flame_core.routing import AttentionPool, Router
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec

GATINGS = ("softmax", "laplace", "gaussian")


def inputs(bsz: int = 12, steps: int = 6, d: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, steps, d, generator=gen)
    lengths = torch.randint(1, steps + 1, (bsz,), generator=gen)
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    present = torch.ones(bsz, dtype=torch.bool)
    present[[2, 7]] = False
    return x * mask.unsqueeze(-1), mask, present


@pytest.mark.parametrize("gating", GATINGS)
@pytest.mark.parametrize("training", [True, False])
def test_exactly_k_gates_per_present_sample_summing_to_one(gating, training):
    torch.manual_seed(0)
    router = Router(16, n_experts=4, top_k=2, gating=gating, noise=True).train(training)
    x, mask, present = inputs()
    out = router(x, mask, present)
    nonzero = (out.gates > 0).sum(1)
    assert nonzero[present].eq(2).all()
    assert torch.allclose(out.gates[present].sum(1), torch.ones(int(present.sum())), atol=1e-6)
    assert torch.allclose(out.weights[present].sum(1), torch.ones(int(present.sum())), atol=1e-6)
    # The dense gates and the (experts, weights) pairs describe the same routing.
    assert torch.equal(out.gates[present].gather(1, out.experts[present]), out.weights[present])
    assert out.experts.dtype == torch.long and out.experts.shape == (12, 2)


@pytest.mark.parametrize("gating", GATINGS)
def test_absent_samples_get_zero_gates_and_zero_load(gating):
    torch.manual_seed(0)
    router = Router(16, 4, 2, gating, noise=True).train()
    x, mask, present = inputs()
    out = router(x, mask, present)
    assert out.gates[~present].abs().sum() == 0
    assert out.weights[~present].abs().sum() == 0
    assert out.load[~present].abs().sum() == 0
    assert out.load[present].sum() > 0


def test_pool_ignores_padding_bit_for_bit():
    torch.manual_seed(0)
    pool = AttentionPool(16)
    x, mask, _ = inputs()
    z = pool(x, mask)
    x_long = torch.cat([x, torch.randn(12, 5, 16) * 100], dim=1)  # padded steps with garbage values
    mask_long = torch.cat([mask, torch.zeros(12, 5, dtype=torch.bool)], dim=1)
    z_long = pool(x_long, mask_long)
    assert torch.allclose(z, z_long, atol=1e-6, rtol=0)


def test_pool_of_a_row_without_valid_steps_is_zero_not_nan():
    pool = AttentionPool(8)
    z = pool(torch.randn(3, 4, 8), torch.zeros(3, 4, dtype=torch.bool))
    assert torch.equal(z, torch.zeros(3, 8))


@pytest.mark.parametrize("gating", GATINGS)
def test_initial_routing_is_not_degenerate(gating):
    torch.manual_seed(0)
    router = Router(16, n_experts=8, top_k=2, gating=gating, noise=False).eval()
    x, mask, _ = inputs(bsz=64, seed=1)
    out = router(x, mask, torch.ones(64, dtype=torch.bool))
    assert len(out.experts.unique()) >= 5  # with tied gate weights every sample would pick the same 2


def test_noise_only_while_training_and_only_when_enabled():
    x, mask, present = inputs()
    torch.manual_seed(0)
    noisy = Router(16, 4, 2, "laplace", noise=True)
    quiet = Router(16, 4, 2, "laplace", noise=False)
    quiet.load_state_dict(noisy.state_dict())
    noisy.eval()
    assert torch.equal(noisy(x, mask, present).gates, noisy(x, mask, present).gates)
    noisy.train()
    draws = [noisy(x, mask, present).gates for _ in range(5)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    quiet.train()
    assert torch.equal(quiet(x, mask, present).gates, quiet(x, mask, present).gates)
    # Without noise the load is a hard 0/1 count; with noise it is a probability strictly inside (0, 1).
    hard = quiet(x, mask, present).load
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    soft = noisy(x, mask, present).load[present]
    assert ((soft > 0) & (soft < 1)).any()


def test_gate_parameter_shapes_depend_only_on_d_and_e():
    config = FlameConfig(d_model=16, n_heads=2, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4)

    def router_shapes(specs: SpecSet) -> set[tuple[str, tuple[int, ...]]]:
        model = build_flame(config, specs)
        return {
            (n, tuple(p.shape)) for r in model.blocks[0].routers.values() for n, p in r.named_parameters()
        }

    small = SpecSet(
        modalities={"a": ModalitySpec("a", "timeseries", dim=2, max_len=5)},
        tasks={"t": TaskSpec("t", ("a",), HeadSpec("binary"))},
    )
    large = SpecSet(
        modalities={
            "b": ModalitySpec("b", "tabular", dim=40),
            "c": ModalitySpec("c", "text", max_len=5000),
            "d": ModalitySpec("d", "embedding", dim=7, max_len=3),
        },
        tasks={"u": TaskSpec("u", ("b", "c", "d"), HeadSpec("multiclass", classes=3))},
    )
    shapes = router_shapes(small)
    assert shapes == router_shapes(large)
    assert shapes == {("pool.query", (16,)), ("w_gate", (4, 16)), ("w_noise", (4, 16))}


def test_router_rejects_bad_arguments():
    with pytest.raises(ValueError, match="gating"):
        Router(8, 4, 2, "cosine", noise=True)
    with pytest.raises(ValueError, match="top_k"):
        Router(8, 4, 5, "laplace", noise=True)
