"""Calibration: ECE, temperature scaling, split-conformal sets and their JSON, on synthetic data drawn
from a known model (so the true probabilities, and hence the right answers, are known)."""

import json

import numpy as np
import pytest
import torch

from flame_core.calibration import (
    calibrated,
    check_calibration,
    expected_calibration_error,
    fit_conformal,
    fit_task_calibration,
    fit_temperature,
    prediction_set,
)
from flame_core.heads import predict_outputs
from flame_core.specs import HeadSpec

BINARY = HeadSpec("binary")
MULTICLASS = HeadSpec("multiclass", classes=5)
MULTILABEL = HeadSpec("multilabel", classes=4)
REGRESSION = HeadSpec("regression")
CLASSIFIERS = [BINARY, MULTICLASS, MULTILABEL]
ALL_HEADS = [*CLASSIFIERS, REGRESSION]


def draw(head: HeadSpec, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(true logits (n, out_dim) float32, labels as collate makes them) with labels drawn from
    predict_outputs(head, logits): the true logits are perfectly calibrated."""
    rng = np.random.default_rng(seed)
    if head.type == "regression":
        yhat = rng.normal(0.0, 1.0, n) * 2.0
        y = yhat + rng.normal(0.0, 0.5, n)
        return torch.tensor(yhat[:, None], dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    scale = 1.5 if head.type == "multiclass" else 2.0
    z = torch.tensor(rng.normal(0.0, scale, (n, head.out_dim)), dtype=torch.float32)
    p = predict_outputs(head, z).double().numpy()
    if head.type == "multiclass":
        y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1).clip(0, head.classes - 1)
        return z, torch.tensor(y, dtype=torch.long)
    y = rng.random(p.shape) < p
    if head.type == "binary":
        return z, torch.tensor(y, dtype=torch.long)
    return z, torch.tensor(y, dtype=torch.float32)


def reference_sets(head: HeadSpec, values: np.ndarray, qhat) -> np.ndarray:
    """Vectorised membership (n, classes) for binary/multiclass, (n, labels, 2) for multilabel."""
    if head.type == "multiclass":
        return 1.0 - values <= qhat
    q = np.asarray(qhat, dtype=np.float64)
    p1 = values if head.type == "multilabel" else values[:, None]
    both = np.stack([1.0 - (1.0 - p1) <= q, 1.0 - p1 <= q], axis=-1)  # (n, labels, 2)
    return both if head.type == "multilabel" else both[:, 0, :]


@pytest.mark.parametrize("head", CLASSIFIERS, ids=lambda h: h.type)
def test_ece_small_when_calibrated_and_large_when_over_confident(head):
    z, y = draw(head, 8000, seed=1)
    good = expected_calibration_error(predict_outputs(head, z).numpy(), y.numpy(), head)
    bad = expected_calibration_error(predict_outputs(head, 3 * z).numpy(), y.numpy(), head)
    assert good < 0.03
    assert bad > 0.08


def test_ece_is_exact_on_a_hand_computed_sample():
    # Two bins used: p = 0.2 (labels 0, 1: |0.5 - 0.2| = 0.3) and p = 0.9 (labels 1, 1: |1 - 0.9| = 0.1).
    ece = expected_calibration_error(np.array([0.2, 0.2, 0.9, 0.9]), np.array([0, 1, 1, 1]), BINARY, bins=10)
    assert ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)
    with pytest.raises(ValueError, match="classification"):
        expected_calibration_error(np.zeros(3), np.zeros(3), REGRESSION)


@pytest.mark.parametrize("head", CLASSIFIERS, ids=lambda h: h.type)
def test_fit_temperature_recovers_over_confidence_and_lowers_ece(head):
    z, y = draw(head, 4000, seed=2)
    t = fit_temperature(3 * z, y, head)
    assert abs(t - 3.0) < 0.3
    assert fit_temperature(3 * z, y, head) == t  # deterministic
    before = expected_calibration_error(predict_outputs(head, 3 * z).numpy(), y.numpy(), head)
    after = calibrated(head, 3 * z, {"temperature": t}).numpy()
    assert expected_calibration_error(after, y.numpy(), head) < min(0.03, before / 3)


def test_calibrated_divides_classification_logits_only():
    z = torch.tensor([[2.0, -1.0, 0.5, 0.0, 1.0]])
    assert torch.equal(calibrated(MULTICLASS, z, None), predict_outputs(MULTICLASS, z))
    assert torch.allclose(calibrated(MULTICLASS, z, {"temperature": 2.0}), torch.softmax(z / 2, dim=1))
    r = torch.tensor([[7.5]])
    assert calibrated(REGRESSION, r, {"temperature": 2.0}).item() == 7.5
    assert fit_temperature(r, torch.tensor([1.0]), REGRESSION) == 1.0


@pytest.mark.parametrize("head", ALL_HEADS, ids=lambda h: h.type)
def test_conformal_coverage_on_a_fresh_split(head):
    z_cal, y_cal = draw(head, 4000, seed=3)
    z_test, y_test = draw(head, 4000, seed=4)
    over = 1.0 if head.type == "regression" else 3.0  # classifiers: over-confident logits
    calib = fit_task_calibration(head, over * z_cal, y_cal, coverage=0.9)
    assert calib["n"] == 4000 and calib["coverage"] == 0.9
    values = calibrated(head, over * z_test, calib)
    answers = [prediction_set(head, v, calib) for v in values.tolist()]
    y = y_test.numpy()
    if head.type == "regression":
        covered = np.array(
            [a["interval"][0] <= t <= a["interval"][1] for a, t in zip(answers, y, strict=True)]
        )
        assert not any(a["abstain"] for a in answers)
        assert abs(covered.mean() - 0.9) < 0.03
    elif head.type == "multilabel":
        member = reference_sets(head, values.double().numpy(), calib["qhat"])  # (n, labels, 2)
        per_label = np.take_along_axis(member, y.astype(int)[..., None], axis=-1)[..., 0].mean(axis=0)
        assert np.all(np.abs(per_label - 0.9) < 0.03), per_label
    else:
        covered = np.array([int(t) in a["set"] for a, t in zip(answers, y, strict=True)])
        assert abs(covered.mean() - 0.9) < 0.03
        assert any(a["abstain"] for a in answers) and not all(a["abstain"] for a in answers)


@pytest.mark.parametrize("head", [BINARY, MULTICLASS, MULTILABEL], ids=lambda h: h.type)
def test_prediction_set_agrees_with_a_vectorised_reference(head):
    z, y = draw(head, 3000, seed=5)
    calib = fit_task_calibration(head, 2 * z[:1000], y[:1000], coverage=0.8)
    values = calibrated(head, 2 * z[1000:], calib)
    member = reference_sets(head, values.double().numpy(), calib["qhat"])
    for row, v in zip(member, values.tolist(), strict=True):
        got = prediction_set(head, v, calib)
        if head.type == "multilabel":
            want = {
                str(j): "yes" if (m1 and not m0) else "no" if (m0 and not m1) else "uncertain"
                for j, (m0, m1) in enumerate(row)
            }
            assert got["labels"] == want
            assert got["abstain"] == ("uncertain" in want.values())
        else:
            assert got["set"] == [int(c) for c in np.flatnonzero(row)]
            assert got["abstain"] == (len(got["set"]) != 1)
        assert json.loads(json.dumps(got)) == got


def test_too_few_samples_put_every_class_in_the_set():
    values, labels = np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])
    fit = fit_conformal(BINARY, values, labels, coverage=0.9)  # ceil(4 * 0.9) / 3 > 1
    assert fit == {"coverage": 0.9, "qhat": 1.0, "n": 3, "score": "lac"}
    assert prediction_set(BINARY, 0.99, fit) == {"set": [0, 1], "abstain": True}
    with pytest.raises(ValueError, match="cannot give coverage"):
        fit_conformal(REGRESSION, values, labels.astype(float), coverage=0.9)
    with pytest.raises(ValueError, match="coverage"):
        fit_conformal(BINARY, values, labels, coverage=1.0)


def test_regression_interval_and_qhat_are_the_residual_quantile():
    # n = 19, coverage 0.9: level ceil(20 * 0.9) / 19 = 18 / 19; numpy's "higher" quantile there is
    # sorted[ceil(18 * 18 / 19)] = sorted[18] = 19 (one rank above the textbook 18th order statistic).
    residuals = np.arange(1, 20, dtype=np.float64)
    fit = fit_conformal(REGRESSION, np.zeros(19), -residuals, coverage=0.9)
    assert fit["qhat"] == float(np.quantile(residuals, 18 / 19, method="higher")) == 19.0
    assert fit["score"] == "abs_residual" and fit["n"] == 19
    assert prediction_set(REGRESSION, 1.5, fit) == {"interval": [-17.5, 20.5], "abstain": False}


@pytest.mark.parametrize("head", ALL_HEADS, ids=lambda h: h.type)
def test_fit_task_calibration_is_deterministic_json_that_passes_its_check(head):
    z, y = draw(head, 500, seed=6)
    a, b = fit_task_calibration(head, 2 * z, y), fit_task_calibration(head, 2 * z, y)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.loads(json.dumps(a)) == a
    check_calibration(a, head, "calibration.t")
    assert a["method"] == "temperature+split-conformal"
    if head.type == "regression":
        assert a["ece_before"] is None and a["ece_after"] is None and a["temperature"] == 1.0
    else:
        assert a["ece_after"] < a["ece_before"]


GOOD = {"method": "temperature+split-conformal", "temperature": 1.5, "coverage": 0.9, "n": 100}


@pytest.mark.parametrize(
    ("head", "change", "field"),
    [
        (BINARY, {"temperature": 0.0}, "temperature"),
        (BINARY, {"temperature": float("nan")}, "temperature"),
        (BINARY, {"temperature": "2"}, "temperature"),
        (BINARY, {"coverage": 1.0}, "coverage"),
        (BINARY, {"qhat": float("inf")}, "qhat"),
        (BINARY, {"qhat": 1.5}, "qhat"),
        (BINARY, {"qhat": True}, "qhat"),
        (BINARY, {"n": 0}, "n"),
        (BINARY, {"score": "abs_residual"}, "score"),
        (BINARY, {"method": "mapie"}, "method"),
        (BINARY, {"ece_after": None}, "ece_after"),
        (MULTILABEL, {"qhat": 0.5}, "qhat"),
        (MULTILABEL, {"qhat": [0.5, 0.5, 0.5]}, "qhat"),
        (MULTILABEL, {"qhat": [0.5, 0.5, None, 0.5]}, "qhat[2]"),
        (REGRESSION, {"qhat": -1.0, "score": "abs_residual"}, "qhat"),
        (REGRESSION, {"score": "abs_residual", "ece_before": 0.1}, "ece_before"),
    ],
)
def test_check_calibration_names_the_bad_field(head, change, field):
    calib = dict(GOOD, score="lac", qhat=[0.4] * 4 if head.type == "multilabel" else 0.4)
    calib.update(ece_before=0.2, ece_after=0.05)
    if head.type == "regression":
        calib.update(ece_before=None, ece_after=None, score="abs_residual", qhat=3.0)
    check_calibration(calib, head, "tasks.t.calibration")  # the unchanged one passes
    with pytest.raises(ValueError, match=f"tasks.t.calibration.{field}".replace("[", r"\[")):
        check_calibration({**calib, **change}, head, "tasks.t.calibration")
    with pytest.raises(ValueError, match="tasks.t.calibration"):
        check_calibration([calib], head, "tasks.t.calibration")
