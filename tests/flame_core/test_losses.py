import math

import pytest
import torch

from flame_core.heads import predict_outputs
from flame_core.losses import balance_loss, cv_squared, interaction_loss, task_loss
from flame_core.routing import RouterOutput
from flame_core.specs import HeadSpec, TaskSpec

BINARY, REGRESSION = HeadSpec("binary"), HeadSpec("regression")
MULTICLASS, MULTILABEL = HeadSpec("multiclass", classes=3), HeadSpec("multilabel", classes=2)


def test_binary_loss_is_bce_over_labelled_rows_only():
    logits = torch.tensor([[0.0], [2.0], [-1.0]])
    labels = torch.tensor([1, 0, 987])  # the unlabelled row may hold anything
    mask = torch.tensor([True, True, False])
    expected = (math.log(2) + math.log(1 + math.exp(2.0))) / 2
    assert task_loss(BINARY, logits, labels, mask).item() == pytest.approx(expected, rel=1e-6)


def test_multiclass_multilabel_and_regression_losses():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    loss = task_loss(MULTICLASS, logits, torch.tensor([0, -1]), torch.tensor([True, False]))
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-6)
    ml = task_loss(
        MULTILABEL, torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.ones(2).bool()
    )
    assert ml.item() == pytest.approx(math.log(2), rel=1e-6)
    reg = task_loss(REGRESSION, torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 3.0]), torch.ones(2).bool())
    assert reg.item() == pytest.approx(0.5)


def test_loss_without_labelled_rows_is_zero_and_still_differentiable():
    logits = torch.randn(3, 1, requires_grad=True)
    loss = task_loss(BINARY, logits, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 1))


def test_task_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits shape"):
        task_loss(MULTICLASS, torch.zeros(2, 2), torch.zeros(2).long(), torch.ones(2).bool())
    with pytest.raises(ValueError, match="mask"):
        task_loss(BINARY, torch.zeros(2, 1), torch.zeros(2).long(), torch.ones(3).bool())


def test_predict_outputs_per_head_type():
    assert torch.allclose(predict_outputs(BINARY, torch.tensor([[0.0], [100.0]])), torch.tensor([0.5, 1.0]))
    probs = predict_outputs(MULTICLASS, torch.tensor([[1.0, 1.0, 1.0]]))
    assert probs.shape == (1, 3) and torch.allclose(probs, torch.full((1, 3), 1 / 3))
    assert torch.allclose(predict_outputs(MULTILABEL, torch.zeros(2, 2)), torch.full((2, 2), 0.5))
    assert torch.equal(predict_outputs(REGRESSION, torch.tensor([[2.5], [-1.0]])), torch.tensor([2.5, -1.0]))
    with pytest.raises(ValueError, match="logits shape"):
        predict_outputs(BINARY, torch.zeros(2, 2))


def routed(gates: list[list[float]], present: list[bool] | None = None) -> RouterOutput:
    g = torch.tensor(gates)
    p = torch.ones(len(gates), dtype=torch.bool) if present is None else torch.tensor(present)
    k = int((g[0] > 0).sum())
    w, idx = g.topk(k, dim=1)
    return RouterOutput(g, idx, w, (g > 0).float(), p)


def test_cv_squared_is_zero_for_uniform_use():
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == 0.0
    assert cv_squared(torch.tensor([4.0, 0.0])).item() == pytest.approx(1.0)


def test_balance_loss_rewards_even_use_and_ignores_absent_samples():
    even = routed([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    skewed = routed([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0]])
    assert balance_loss([even]).item() == pytest.approx(0.0, abs=1e-6)
    assert balance_loss([skewed]).item() == pytest.approx(2.0)
    assert balance_loss([skewed, even]).item() == pytest.approx(2.0)  # summed over routers
    # An absent sample has zero gates; it must not count as an unused slot.
    with_absent = routed([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 0]], [True, True, False])
    assert balance_loss([with_absent]).item() == pytest.approx(0.0, abs=1e-6)
    assert balance_loss([]).item() == 0.0


def test_interaction_loss_sign_follows_the_task_mode():
    a = routed([[0.5, 0.5, 0, 0]])
    same = routed([[0.5, 0.5, 0, 0]])
    disjoint = routed([[0, 0, 0.5, 0.5]])
    spread = TaskSpec("s", ("a", "b"), BINARY, "spread")
    concentrate = TaskSpec("c", ("a", "b"), BINARY, "concentrate")
    assert interaction_loss([spread], {"a": a, "b": same}).item() == pytest.approx(1.0)
    assert interaction_loss([concentrate], {"a": a, "b": same}).item() == pytest.approx(-1.0)
    assert interaction_loss([spread], {"a": a, "b": disjoint}).item() == pytest.approx(0.0)
    assert interaction_loss([spread, concentrate], {"a": a, "b": same}).item() == pytest.approx(0.0)


def test_interaction_loss_is_zero_for_single_modality_tasks_and_absent_modalities():
    a = routed([[0.5, 0.5, 0, 0]])
    nobody = routed([[0, 0, 0, 0]], [False])
    single = TaskSpec("one", ("a",), BINARY)
    pair = TaskSpec("two", ("a", "b"), BINARY)
    assert interaction_loss([single], {"a": a}).item() == 0.0
    assert interaction_loss([pair], {"a": a, "b": nobody}).item() == 0.0
    assert interaction_loss([pair], {"a": a}).item() == 0.0


def test_interaction_loss_averages_over_modality_pairs():
    mods = {"a": routed([[1.0, 0, 0]]), "b": routed([[1.0, 0, 0]]), "c": routed([[0, 0, 1.0]])}
    task = TaskSpec("t", ("a", "b", "c"), BINARY)
    assert interaction_loss([task], mods).item() == pytest.approx(1 / 3)  # pairs: ab=1, ac=0, bc=0
