"""Shift scores from pooled router summaries: shifted samples score higher, in-distribution ones exceed
the threshold at about 1 - quantile, the JSON is deterministic and checked."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from flame_core.shift import check_shift, fit_shift, nearest_tasks, shift_score, shift_scores

DIMS = {"a": 8, "b": 4}


def gaussian(n: int, seed: int, offset: float = 0.0) -> tuple[dict, dict]:
    """Correlated Gaussian summaries per modality (fixed covariance), each present with prob. 0.8."""
    rng = np.random.default_rng(seed)
    summaries, present = {}, {}
    for i, (m, d) in enumerate(DIMS.items()):
        mix = np.random.default_rng(100 + i).normal(0.0, 1.0, (d, d))  # the same for every draw
        summaries[m] = (rng.normal(0.0, 1.0, (n, d)) + offset) @ mix + 2.0  # offset in whitened units
        present[m] = rng.random(n) < 0.8
    present["a"][~(present["a"] | present["b"])] = True  # every sample has a modality
    return summaries, present


def row(summaries: dict, present: dict, i: int) -> tuple[dict, dict]:
    """Sample i as the service sees it: plain lists and bools."""
    return {m: summaries[m][i].tolist() for m in summaries}, {m: bool(present[m][i]) for m in present}


def scores(stats: dict, summaries: dict, present: dict) -> np.ndarray:
    n = len(present["a"])
    return np.array([shift_score(stats, *row(summaries, present, i)) for i in range(n)])


@pytest.fixture(scope="module")
def fitted() -> dict:
    return fit_shift(*gaussian(5000, seed=0), quantile=0.99)


def test_in_distribution_samples_exceed_the_threshold_at_one_minus_quantile(fitted):
    fresh = scores(fitted, *gaussian(5000, seed=1))
    assert abs((fresh > fitted["threshold"]).mean() - 0.01) < 0.02
    assert fitted["n"] == 5000 and fitted["quantile"] == 0.99
    assert abs(np.median(fresh) - 0.9) < 0.3  # squared distance / d: about 1 in distribution


def test_shifted_samples_score_higher(fitted):
    inside = scores(fitted, *gaussian(1000, seed=2))
    shifted = scores(fitted, *gaussian(1000, seed=3, offset=2.0))
    auroc = roc_auc_score(np.r_[np.zeros(1000), np.ones(1000)], np.r_[inside, shifted])
    assert auroc > 0.95
    assert (shifted > fitted["threshold"]).mean() > 0.5


def test_pure_python_score_matches_the_training_scores(fitted):
    # The threshold is a training sample's score: that sample must score exactly at it (to rounding).
    train = scores(fitted, *gaussian(5000, seed=0))
    assert np.isclose(train, fitted["threshold"], rtol=1e-9).any()
    assert (train > fitted["threshold"]).mean() <= 0.01


def test_modalities_without_two_present_rows_are_left_out():
    summaries, present = gaussian(50, seed=4)
    present["b"][:] = False
    present["b"][3] = True
    present["a"][:] = True
    stats = fit_shift(summaries, present)
    assert set(stats["modalities"]) == {"a"}
    assert shift_score(stats, {"b": [0.0] * 4}, {"a": False, "b": True}) is None
    x, p = row(summaries, present, 3)
    assert shift_score(stats, x, p) == shift_score(stats, {"a": x["a"]}, {"a": True})
    present["a"][:] = False
    empty = fit_shift(summaries, present)
    assert empty["modalities"] == {} and empty["threshold"] is None
    check_shift(empty, "shift")


def test_nearest_tasks_orders_by_score_and_skips_tasks_that_cannot_score():
    near = fit_shift(*gaussian(2000, seed=5))
    far = fit_shift(*gaussian(2000, seed=6, offset=3.0))
    only_b = fit_shift({"b": gaussian(100, seed=7)[0]["b"]}, {"b": np.ones(100, dtype=bool)})
    x, p = row(*gaussian(1, seed=8), 0)
    p = {"a": True, "b": False}
    ranked = nearest_tasks({"far": far, "near": near, "only_b": only_b}, x, p)
    assert [t for t, _ in ranked] == ["near", "far"]
    assert ranked[0][1] < ranked[1][1]


def test_fit_is_deterministic_json():
    a = fit_shift(*gaussian(500, seed=9))
    b = fit_shift(*gaussian(500, seed=9))
    assert json.dumps(a) == json.dumps(b)
    assert json.loads(json.dumps(a)) == a
    check_shift(a, "shift.t")
    precision = np.array(a["modalities"]["a"]["precision"])
    assert precision.shape == (8, 8) and np.array_equal(precision, precision.T)
    assert np.all(np.linalg.eigvalsh(precision) > 0)


def test_bad_arguments_raise():
    summaries, present = gaussian(20, seed=10)
    with pytest.raises(ValueError, match="quantile"):
        fit_shift(summaries, present, quantile=1.0)
    with pytest.raises(ValueError, match="shrinkage"):
        fit_shift(summaries, present, shrinkage=0.0)
    with pytest.raises(ValueError, match="'b'"):
        fit_shift(summaries, {**present, "b": present["b"][:10]})
    stats = fit_shift(summaries, present)
    with pytest.raises(ValueError, match="fitted on 8"):
        shift_score(stats, {"a": [0.0] * 3}, {"a": True})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.update(quantile=1.5), "quantile"),
        (lambda s: s.update(quantile="0.99"), "quantile"),
        (lambda s: s.update(n=-1), "n"),
        (lambda s: s.update(threshold=None), "threshold"),
        (lambda s: s.update(threshold=float("inf")), "threshold"),
        (lambda s: s.update(modalities=[]), "modalities"),
        (lambda s: s["modalities"]["a"].update(mean=[]), "modalities.a.mean"),
        (lambda s: s["modalities"]["a"]["mean"].__setitem__(2, float("nan")), r"modalities.a.mean\[2\]"),
        (lambda s: s["modalities"]["b"]["precision"].pop(), "modalities.b.precision"),
        (lambda s: s["modalities"]["b"]["precision"][1].pop(), r"modalities.b.precision\[1\]"),
        (
            lambda s: s["modalities"]["b"]["precision"][0].__setitem__(3, None),
            r"modalities.b.precision\[0\]\[3\]",
        ),
    ],
)
def test_check_shift_names_the_bad_field(change, field):
    stats = json.loads(json.dumps(fit_shift(*gaussian(100, seed=11))))
    check_shift(stats, "manifest.shift.t")
    change(stats)
    with pytest.raises(ValueError, match=f"manifest.shift.t.{field}"):
        check_shift(stats, "manifest.shift.t")
    with pytest.raises(ValueError, match="manifest.shift.t"):
        check_shift("nope", "manifest.shift.t")


def test_batch_scores_match_one_by_one_and_do_not_depend_on_the_batch(fitted):
    summaries, present = gaussian(200, seed=4)
    present["b"][:20] = False
    present["a"][:10] = False  # rows 0-9: no modality at all
    present["a"][10:20] = True
    batch = shift_scores(fitted, summaries, present)
    assert batch[:10] == [None] * 10
    one = scores(fitted, {m: v[10:] for m, v in summaries.items()}, {m: v[10:] for m, v in present.items()})
    assert np.allclose(batch[10:], one, rtol=1e-12)
    for picks in ([15], [3, 150, 42], list(range(199, 100, -7))):  # any company, any position
        part = shift_scores(
            fitted, {m: v[picks] for m, v in summaries.items()}, {m: v[picks] for m, v in present.items()}
        )
        assert part == [batch[i] for i in picks]  # bit for bit
