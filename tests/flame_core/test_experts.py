import pytest
import torch
import torch.nn.functional as F

from flame_core.experts import Expert, MoELayer, conv_matrix, conv_windows, fast_dropout


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_conv_windows_match_a_same_padded_conv1d(kernel):
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 7, 6), torch.randn(5, 6, kernel), torch.randn(5)
    ref = F.conv1d(x.transpose(1, 2), w, b, padding="same").transpose(1, 2)
    ours = F.linear(conv_windows(x, kernel), conv_matrix(w), b)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 9])
@pytest.mark.parametrize("kernel", [3, 4])
def test_expert_is_length_preserving_with_shapes_from_d_only(steps, kernel):
    torch.manual_seed(0)
    expert = Expert(16, hidden=32, kernel=kernel, dropout=0.0)
    out = expert(torch.randn(4, steps, 16), torch.ones(4, steps, dtype=torch.bool))
    assert out.shape == (4, steps, 16)
    assert {n: tuple(p.shape) for n, p in expert.named_parameters()} == {
        "conv.weight": (16, 16, kernel),
        "conv.bias": (16,),
        "norm.weight": (16,),
        "norm.bias": (16,),
        "fc1.weight": (32, 16),
        "fc1.bias": (32,),
        "fc2.weight": (16, 32),
        "fc2.bias": (16,),
    }


def test_padding_does_not_leak_into_valid_steps():
    torch.manual_seed(0)
    expert = Expert(8, 16, 3, 0.0).eval()
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    noisy = torch.where(mask.unsqueeze(-1), x, torch.randn(2, 6, 8) * 50)
    a, b = expert(x, mask), expert(noisy, mask)
    assert torch.equal(a[mask], b[mask])
    short = expert(x[:1, :4], mask[:1, :4])  # the same sequence without its padding
    assert torch.allclose(short[0], a[0, :4], atol=1e-6)


def test_explicit_weights_replace_the_module_weights():
    torch.manual_seed(0)
    expert = Expert(8, 16, 3, 0.0).eval()
    x, mask = torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool)
    assert torch.equal(expert(x, mask, expert.weights()), expert(x, mask))
    swapped = dict(expert.weights())
    swapped["fc2.weight"] = torch.zeros_like(swapped["fc2.weight"])
    out = expert(x, mask, swapped)
    assert torch.allclose(out, expert.fc2.bias.expand_as(out))
    assert not torch.allclose(out, expert(x, mask))


def test_moe_equals_gate_weighted_sum_of_the_chosen_experts():
    torch.manual_seed(0)
    moe = MoELayer(8, n_experts=4, hidden=16, kernel=3, dropout=0.0).eval()
    xa, ma = torch.randn(5, 6, 8), torch.rand(5, 6) > 0.3
    xb, mb = torch.randn(5, 3, 8), torch.ones(5, 3, dtype=torch.bool)
    ga = torch.zeros(5, 4)
    ga[torch.arange(5), torch.tensor([0, 1, 2, 3, 0])] = 0.7
    ga[torch.arange(5), torch.tensor([1, 2, 3, 0, 3])] = 0.3
    gb = torch.zeros(5, 4)
    gb[:, 2] = 1.0
    gb[4] = 0.0  # an absent sample
    out_a, out_b = moe([xa, xb], [ma, mb], [ga, gb])
    for x, m, g, out in ((xa, ma, ga, out_a), (xb, mb, gb, out_b)):
        ref = sum(g[:, e, None, None] * moe.experts[e](x, m) for e in range(4)) * m.unsqueeze(-1)
        assert torch.allclose(out, ref, atol=1e-5)
    assert torch.equal(out_b[4], torch.zeros(3, 8))
    assert torch.equal(out_a[~ma], torch.zeros(int((~ma).sum()), 8))


def test_moe_runs_only_the_routed_experts():
    torch.manual_seed(0)
    moe = MoELayer(8, 4, 16, 3, 0.0)
    gates = torch.zeros(3, 4)
    gates[:, 1] = 0.5
    gates[:, 3] = 0.5
    (out,) = moe([torch.randn(3, 4, 8)], [torch.ones(3, 4, dtype=torch.bool)], [gates])
    out.sum().backward()
    grads = [e.fc1.weight.grad for e in moe.experts]
    assert grads[0] is None and grads[2] is None
    assert grads[1].abs().sum() > 0 and grads[3].abs().sum() > 0


def test_moe_rejects_gates_of_the_wrong_shape():
    moe = MoELayer(8, 4, 16, 3, 0.0)
    with pytest.raises(ValueError, match="gates shape"):
        moe([torch.randn(3, 4, 8)], [torch.ones(3, 4, dtype=torch.bool)], [torch.ones(3, 5)])


def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = fast_dropout(x, 0.1, training=True)
    assert abs((y == 0).float().mean().item() - 0.1) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(fast_dropout(x, 0.1, training=False), x)
    torch.manual_seed(1)
    a = fast_dropout(torch.ones(3, 5), 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(a, fast_dropout(torch.ones(3, 5), 0.5, True))  # reproducible under a seed
