import math

import numpy as np
import pytest

from flame_core.metrics import task_metrics
from flame_core.specs import HeadSpec


def test_binary_perfect_and_inverted():
    y = np.array([0, 0, 1, 1])
    good = task_metrics(HeadSpec("binary"), np.array([0.1, 0.2, 0.8, 0.9]), y)
    bad = task_metrics(HeadSpec("binary"), np.array([0.9, 0.8, 0.2, 0.1]), y)
    assert good["auroc"] == 1.0 and good["auprc"] == 1.0 and good["accuracy"] == 1.0
    assert bad["auroc"] == 0.0 and bad["accuracy"] == 0.0


def test_binary_single_class_gives_nan_auroc():
    m = task_metrics(HeadSpec("binary"), np.array([0.2, 0.7]), np.array([1, 1]))
    assert math.isnan(m["auroc"]) and m["accuracy"] == 0.5


def test_multiclass_macro_auroc_and_accuracy():
    prob = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    m = task_metrics(HeadSpec("multiclass", classes=3), prob, np.array([0, 1, 2, 1]))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["auroc"] == 1.0  # ranking per class is perfect although one argmax is wrong
    swapped = task_metrics(HeadSpec("multiclass", classes=3), prob[:, ::-1], np.array([0, 1, 2, 1]))
    assert swapped["auroc"] <= 0.5 + 1e-9 and swapped["accuracy"] == 0.25


def test_multilabel_macro_skips_constant_columns():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    prob = np.array([[0.9, 0.1, 0.5], [0.2, 0.9, 0.5], [0.8, 0.7, 0.5]])
    m = task_metrics(HeadSpec("multilabel", classes=3), prob, y)
    assert m["auroc"] == 1.0  # the all-zero third label is left out, not scored 0.5


def test_regression_mse():
    m = task_metrics(HeadSpec("regression"), np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    assert m["mse"] == pytest.approx(2.0)
