"""Per-task evaluation metrics: AUROC/AUPRC (macro over classes/labels), F1, accuracy, MSE."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, mean_squared_error, roc_auc_score

from flame_core.specs import HeadSpec

PRIMARY_METRIC = {"binary": "auroc", "multiclass": "auroc", "multilabel": "auroc", "regression": "mse"}


def _macro(score_fn, y_onehot: np.ndarray, prob: np.ndarray) -> float:
    """Mean over columns that have both classes; NaN if none has."""
    scores = [
        score_fn(y_onehot[:, c], prob[:, c])
        for c in range(y_onehot.shape[1])
        if 0 < y_onehot[:, c].sum() < len(y_onehot)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def task_metrics(head: HeadSpec, prob: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics for one task from `heads.predict_outputs` values and labels of the labelled samples.

    binary: prob (N,), labels (N,) 0/1; multiclass: prob (N, C), labels (N,) int;
    multilabel: prob (N, C), labels (N, C) 0/1; regression: prob (N,) predictions, labels (N,).
    """
    prob = np.asarray(prob, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return {"n": 0}
    out: dict[str, float] = {"n": float(len(labels))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if head.type == "binary":
            y = labels.astype(int)
            both = 0 < y.sum() < len(y)
            out["auroc"] = float(roc_auc_score(y, prob)) if both else float("nan")
            out["auprc"] = float(average_precision_score(y, prob)) if both else float("nan")
            pred = (prob >= 0.5).astype(int)
            out["f1"] = float(f1_score(y, pred, zero_division=0))
            out["accuracy"] = float((pred == y).mean())
        elif head.type == "multiclass":
            y = labels.astype(int)
            onehot = np.eye(head.classes)[y]
            out["auroc"] = _macro(roc_auc_score, onehot, prob)
            out["auprc"] = _macro(average_precision_score, onehot, prob)
            pred = prob.argmax(axis=1)
            out["f1"] = float(f1_score(y, pred, average="macro", zero_division=0))
            out["accuracy"] = float((pred == y).mean())
        elif head.type == "multilabel":
            y = labels.astype(int)
            out["auroc"] = _macro(roc_auc_score, y, prob)
            out["auprc"] = _macro(average_precision_score, y, prob)
            pred = (prob >= 0.5).astype(int)
            out["f1"] = float(f1_score(y, pred, average="macro", zero_division=0))
            out["accuracy"] = float((pred == y).mean())
        else:
            out["mse"] = float(mean_squared_error(labels.astype(float), prob))
    return out


def higher_is_better(metric: str) -> bool:
    return metric != "mse"
