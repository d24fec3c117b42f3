import pytest
import torch

from flame_core.components import as_matrix, choose_rank, energy_spectrum, rank_for_energy, truncate


def test_truncation_is_the_best_rank_r_approximation():
    torch.manual_seed(0)
    delta = torch.randn(12, 8, 3)  # a conv kernel: flattened to (12, 24)
    low = truncate(delta, 4)
    assert low.b.shape == (12, 4) and low.a.shape == (4, 24) and low.numel == 4 * (12 + 24)
    err = torch.linalg.matrix_norm(as_matrix(delta) - as_matrix(low.materialise()))
    s = torch.linalg.svdvals(as_matrix(delta).double())
    assert float(err) == pytest.approx(float(s[4:].pow(2).sum().sqrt()), rel=1e-5)  # Eckart-Young
    # No other rank-4 matrix does better: try random rank-4 candidates and a perturbed optimum.
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        b = low.b + 1e-2 * torch.randn(12, 4, generator=g)
        a = low.a + 1e-2 * torch.randn(4, 24, generator=g)
        assert torch.linalg.matrix_norm(as_matrix(delta) - b @ a) > err


def test_data_aware_truncation_is_best_on_the_routed_inputs():
    torch.manual_seed(2)
    x = torch.randn(400, 4) @ torch.randn(4, 16) + 0.1 * torch.randn(400, 16)
    c = x.T @ x / len(x)
    delta = torch.randn(10, 16)
    aware, plain = truncate(delta, 3, c), truncate(delta, 3)
    loss = lambda m: float((x @ (delta - m).T).pow(2).sum())  # noqa: E731
    assert loss(aware.materialise()) < loss(plain.materialise())
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        b = aware.b + 1e-2 * torch.randn(10, 3, generator=g)
        a = aware.a + 1e-2 * torch.randn(3, 16, generator=g)
        assert loss(b @ a) > loss(aware.materialise())


def test_full_rank_truncation_reconstructs_and_zero_rank_is_empty():
    delta = torch.randn(6, 5)
    assert torch.allclose(truncate(delta, 5).materialise(), delta, atol=1e-5)
    assert torch.count_nonzero(truncate(delta, 0).materialise()) == 0
    with pytest.raises(ValueError, match="rank 6"):
        truncate(delta, 6)


def test_auto_rank_meets_its_data_aware_energy_target():
    torch.manual_seed(1)
    x = torch.randn(500, 3) @ torch.randn(3, 16) + 0.05 * torch.randn(500, 16)  # inputs near a 3-dim subspace
    c = x.T @ x / len(x)
    delta = torch.randn(10, 16)
    for target in (0.9, 0.99):
        r = choose_rank(delta, "auto", target, c)
        kept = truncate(delta, r, c).materialise()
        share = float((x @ kept.T).pow(2).sum() / (x @ delta.T).pow(2).sum())
        assert share >= target - 1e-6
        if r > 0:
            below = truncate(delta, r - 1, c).materialise()
            # The rank below misses the target under the energy decomposition used to choose.
            e = energy_spectrum(delta, c)
            assert float(e[: r - 1].sum() / e.sum()) < target
            assert float((x @ below.T).pow(2).sum() / (x @ delta.T).pow(2).sum()) < share
    # Weight-only energy needs a higher rank than data-aware energy here: inputs are low-rank.
    assert choose_rank(delta, "auto", 0.99) > choose_rank(delta, "auto", 0.99, c)


def test_rank_arguments_are_checked():
    assert rank_for_energy(torch.zeros(4), 0.9) == 0
    assert choose_rank(torch.randn(4, 3), 32) == 3
    with pytest.raises(ValueError, match="energy target"):
        rank_for_energy(torch.ones(3), 1.5)
    with pytest.raises(ValueError, match="rank must be"):
        choose_rank(torch.randn(4, 3), "high")
