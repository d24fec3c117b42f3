"""Per-task calibration: temperature scaling, split-conformal prediction sets and abstention.

Fitted once per task on held-out labelled data; the result is plain JSON stored in the model manifest
(checked by `check_calibration`) and applied per request:

    calib = fit_task_calibration(head, logits, labels, coverage=0.9)
    # {"method": "temperature+split-conformal", "temperature": T, "coverage": 0.9,
    #  "qhat": float | [float per label], "n": n, "score": "lac" | "abs_residual",
    #  "ece_before": float | None, "ece_after": float | None}
    probs = calibrated(head, logits, calib)          # predict_outputs(head, logits / T)
    prediction_set(head, value, calib)               # one instance, pure Python:
    # binary / multiclass: {"set": [class indices, ascending], "abstain": len(set) != 1}
    # multilabel:          {"labels": {"0": "yes" | "no" | "uncertain", ...}, "abstain": any uncertain}
    # regression:          {"interval": [v - qhat, v + qhat], "abstain": False}

The conformal score is LAC (1 - p(true class); for binary p(0) = 1 - p(1); multilabel is one binary
problem per label, with one qhat each) on the *calibrated* outputs, or |y - yhat| for regression. A
class is in the set when its score is <= qhat, i.e. p >= 1 - qhat. With n exchangeable calibration
samples, qhat is the ceil((n+1) * coverage) / n empirical quantile ("higher"), which guarantees
marginal coverage >= `coverage`; if that level exceeds 1 (too few samples) a classification qhat is 1.0
(every class in the set) and a regression fit raises (an infinite interval is not JSON).

Why not MAPIE: our model is not a scikit-learn estimator, the statistics must live as JSON in the model
manifest (covered by the bit-exact guarantee) and be applied per request without a library call on the
event loop; split conformal with LAC is a few lines of numpy to fit and of plain Python to apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from flame_core.heads import predict_outputs
from flame_core.specs import HeadSpec

METHOD = "temperature+split-conformal"
LOG_T_RANGE = (math.log(0.05), math.log(20.0))
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _binary_ece(p: np.ndarray, y: np.ndarray, bins: int) -> float:
    """Reliability of P(1): sum over equal-width bins of weight * |mean(y) - mean(p)|."""
    if len(p) == 0:
        raise ValueError("expected calibration error needs at least one sample")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.abs(np.bincount(idx, y, minlength=bins) - np.bincount(idx, p, minlength=bins))
    return float(gap.sum() / len(p))


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, head: HeadSpec, bins: int = 15
) -> float:
    """ECE with `bins` equal-width bins: binary of P(1) against the 0/1 label, multiclass of the
    top-class confidence against its accuracy, multilabel the mean of the per-label binary ECEs."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(labels)
    if head.type == "binary":
        return _binary_ece(p.reshape(-1), y.reshape(-1).astype(np.float64), bins)
    if head.type == "multiclass":
        correct = (p.argmax(axis=1) == y.astype(np.int64)).astype(np.float64)
        return _binary_ece(p.max(axis=1), correct, bins)
    if head.type == "multilabel":
        y = y.astype(np.float64)
        return float(np.mean([_binary_ece(p[:, j], y[:, j], bins) for j in range(p.shape[1])]))
    raise ValueError(f"expected calibration error needs a classification head, not {head.type!r}")


def _nll(z: np.ndarray, y: np.ndarray, head: HeadSpec) -> float:
    """Mean negative log-likelihood of logits z (float64) for `head`'s labels."""
    if head.type == "multiclass":
        m = z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(z)), y.astype(np.int64)]))
    if head.type == "binary":
        z = z[:, 0]
    return float(np.mean(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))))  # BCE with logits


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, head: HeadSpec) -> float:
    """The T > 0 minimising the NLL of logits / T (1.0 for regression). The NLL is convex in 1/T, hence
    unimodal in log T: a grid then a golden-section search over log T in [log 0.05, log 20], in numpy
    float64, so the same inputs give the same float."""
    if head.type == "regression":
        return 1.0
    z = logits.detach().cpu().double().numpy()
    y = labels.detach().cpu().double().numpy()
    if len(z) == 0:
        raise ValueError("fit_temperature needs at least one labelled sample")

    def loss(log_t: float) -> float:
        return _nll(z / math.exp(log_t), y, head)

    grid = np.linspace(*LOG_T_RANGE, 41)
    best = int(np.argmin([loss(float(g)) for g in grid]))
    lo, hi = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, len(grid) - 1)])
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(40):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = loss(b)
    return float(math.exp((lo + hi) / 2.0))


def calibrated(head: HeadSpec, logits: torch.Tensor, calib: Mapping[str, Any] | None) -> torch.Tensor:
    """`predict_outputs` of logits / T for classification heads; unchanged for regression or no calib."""
    if calib is None or head.type == "regression":
        return predict_outputs(head, logits)
    return predict_outputs(head, logits / float(calib["temperature"]))


def _conformal_qhat(scores: np.ndarray, coverage: float, cap: float | None) -> float:
    n = len(scores)
    if n == 0:
        raise ValueError("conformal calibration needs at least one labelled sample")
    level = math.ceil((n + 1) * coverage - 1e-9) / n
    if level > 1.0:
        if cap is None:
            need = math.ceil(coverage / (1.0 - coverage) - 1e-9)  # the least n with ceil((n+1)c) <= n
            raise ValueError(f"{n} samples cannot give coverage {coverage}; at least {need} are needed")
        return cap
    return float(np.quantile(scores, level, method="higher"))


def _lac_scores(p1: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary LAC: 1 - p(true class), with p(0) = 1 - p(1) (as `prediction_set` computes it)."""
    return np.where(y == 1, 1.0 - p1, 1.0 - (1.0 - p1))


def fit_conformal(head: HeadSpec, values: np.ndarray, labels: np.ndarray, coverage: float) -> dict[str, Any]:
    """Split-conformal qhat on calibrated outputs `values` (what `calibrated` returns, as numpy) of
    labelled samples: `{"coverage", "qhat", "n", "score"}` (see the module docstring)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    v = np.asarray(values, dtype=np.float64)
    y = np.asarray(labels)
    qhat: float | list[float]
    if head.type == "binary":
        qhat = _conformal_qhat(_lac_scores(v.reshape(-1), y.reshape(-1).astype(np.int64)), coverage, 1.0)
    elif head.type == "multiclass":
        true_p = v[np.arange(len(v)), y.astype(np.int64)]
        qhat = _conformal_qhat(1.0 - true_p, coverage, 1.0)
    elif head.type == "multilabel":
        yi = y.astype(np.int64)
        qhat = [_conformal_qhat(_lac_scores(v[:, j], yi[:, j]), coverage, 1.0) for j in range(v.shape[1])]
    elif head.type == "regression":
        qhat = _conformal_qhat(np.abs(y.astype(np.float64).reshape(-1) - v.reshape(-1)), coverage, None)
    else:
        raise ValueError(f"unknown head type {head.type!r}")
    score = "abs_residual" if head.type == "regression" else "lac"
    return {"coverage": float(coverage), "qhat": qhat, "n": len(v), "score": score}


def _binary_membership(p1: float, qhat: float) -> tuple[bool, bool]:
    """(class 0 in the set, class 1 in the set) for one binary output p1 = P(1)."""
    return 1.0 - (1.0 - p1) <= qhat, 1.0 - p1 <= qhat


def prediction_set(head: HeadSpec, value: Any, calib: Mapping[str, Any]) -> dict[str, Any]:
    """One instance's conformal answer from its calibrated output as plain Python (float for binary and
    regression, list of floats otherwise). Pure Python: it runs per request on the event loop."""
    qhat = calib["qhat"]
    if head.type == "binary":
        in0, in1 = _binary_membership(float(value), float(qhat))
        members = [c for c, keep in ((0, in0), (1, in1)) if keep]
        return {"set": members, "abstain": len(members) != 1}
    if head.type == "multiclass":
        q = float(qhat)
        members = [c for c, p in enumerate(value) if 1.0 - float(p) <= q]
        return {"set": members, "abstain": len(members) != 1}
    if head.type == "multilabel":
        answers: dict[str, str] = {}
        for j, (p, q) in enumerate(zip(value, qhat, strict=True)):
            in0, in1 = _binary_membership(float(p), float(q))
            answers[str(j)] = "yes" if in1 and not in0 else "no" if in0 and not in1 else "uncertain"
        return {"labels": answers, "abstain": "uncertain" in answers.values()}
    if head.type == "regression":
        v, q = float(value), float(qhat)
        return {"interval": [v - q, v + q], "abstain": False}
    raise ValueError(f"unknown head type {head.type!r}")


def fit_task_calibration(
    head: HeadSpec, logits: torch.Tensor, labels: torch.Tensor, coverage: float = 0.9
) -> dict[str, Any]:
    """Temperature, conformal qhat and ECE before/after for one task from held-out labelled samples
    (`labels` as `flame_core.collate` makes them; samples without a label removed by the caller)."""
    temperature = fit_temperature(logits, labels, head)
    calib: dict[str, Any] = {"method": METHOD, "temperature": temperature}
    with torch.no_grad():
        before = predict_outputs(head, logits).detach().cpu().double().numpy()
        after = calibrated(head, logits, calib).detach().cpu().double().numpy()
    y = labels.detach().cpu().numpy()
    calib.update(fit_conformal(head, after, y, coverage))
    classify = head.type != "regression"
    calib["ece_before"] = expected_calibration_error(before, y, head) if classify else None
    calib["ece_after"] = expected_calibration_error(after, y, head) if classify else None
    return calib


def _finite(v: Any, field: str) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"{field}: must be a finite number, got {v!r}")
    return float(v)


def _number(calib: Mapping[str, Any], key: str, where: str) -> float:
    return _finite(calib.get(key), f"{where}.{key}")


def check_calibration(calib: Any, head: HeadSpec, where: str) -> None:
    """ValueError naming `where` and the field unless `calib` has the shape `fit_task_calibration`
    returns for `head` (calibration brought from outside, e.g. a manifest, is checked before use)."""
    if not isinstance(calib, dict):
        raise ValueError(f"{where}: calibration must be an object, got {type(calib).__name__}")
    if calib.get("method") != METHOD:
        raise ValueError(f"{where}.method: must be {METHOD!r}, got {calib.get('method')!r}")
    if _number(calib, "temperature", where) <= 0.0:
        raise ValueError(f"{where}.temperature: must be > 0, got {calib['temperature']!r}")
    if not 0.0 < _number(calib, "coverage", where) < 1.0:
        raise ValueError(f"{where}.coverage: must be in (0, 1), got {calib['coverage']!r}")
    n = calib.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where}.n: must be a positive int, got {n!r}")
    score = "abs_residual" if head.type == "regression" else "lac"
    if calib.get("score") != score:
        raise ValueError(
            f"{where}.score: must be {score!r} for a {head.type} head, got {calib.get('score')!r}"
        )
    high = math.inf if head.type == "regression" else 1.0
    if head.type == "multilabel":
        qhat = calib.get("qhat")
        if not isinstance(qhat, list) or len(qhat) != head.classes:
            raise ValueError(f"{where}.qhat: must be a list of {head.classes} numbers, got {qhat!r}")
        qs = [_finite(q, f"{where}.qhat[{j}]") for j, q in enumerate(qhat)]
    else:
        qs = [_number(calib, "qhat", where)]
    if not all(0.0 <= q <= high for q in qs):
        raise ValueError(f"{where}.qhat: must be in [0, {high}], got {calib['qhat']!r}")
    for key in ("ece_before", "ece_after"):
        v = calib.get(key)
        if head.type == "regression" and v is not None:
            raise ValueError(f"{where}.{key}: must be null for a regression head, got {v!r}")
        if head.type != "regression" and not 0.0 <= _number(calib, key, where) <= 1.0:
            raise ValueError(f"{where}.{key}: must be in [0, 1], got {v!r}")
