import json

import numpy as np
import pytest

from flame_core.benchmarks import load_benchmark
from flame_core.benchmarks.digits import quadrants
from flame_core.validation import validate_dataset


@pytest.fixture(scope="module")
def digits():
    return load_benchmark("digits", seed=0)


def test_sizes_and_disjoint_stratified_splits(digits):
    sizes = {k: len(v) for k, v in digits.splits.items()}
    assert sum(sizes.values()) == 1797
    assert abs(sizes["train"] - 0.6 * 1797) < 10 and abs(sizes["test"] - 0.2 * 1797) < 10
    ids = {k: {s["id"] for s in v} for k, v in digits.splits.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    counts = np.bincount([s["labels"]["digit"] for s in digits.splits["test"]], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38


def test_view_shapes_and_labels(digits):
    s = digits.splits["train"][0]
    m = s["modalities"]
    assert np.array(m["rows"]["values"]).shape == (8, 8) and m["rows"]["times"] == list(range(8))
    assert np.array(m["cols"]["values"]).shape == (8, 8)
    assert len(m["quadrants"]["values"]) == 64
    image = np.array(m["image"]["pixels"])
    assert image.shape == (8, 8) and image.max() <= 16 and image.min() >= 0
    np.testing.assert_allclose(np.array(m["rows"]["values"]), image / 16, atol=1e-4)
    np.testing.assert_allclose(np.array(m["cols"]["values"]), image.T / 16, atol=1e-4)
    digit = s["labels"]["digit"]
    assert s["labels"] == {"digit": digit, "parity": digit % 2, "ge5": int(digit >= 5)}
    assert digits.primary_metric == {"digit": "accuracy", "parity": "auroc", "ge5": "auroc"}
    assert {t: set(spec.modalities) for t, spec in digits.specs.tasks.items()} == {
        "digit": {"rows", "cols", "image"},
        "parity": {"quadrants", "rows"},
        "ge5": {"cols", "quadrants"},
    }


def test_quadrant_order():
    image = np.arange(64, dtype=float).reshape(8, 8)
    q = quadrants(image)
    assert q[:4].tolist() == [0, 1, 2, 3] and q[16:20].tolist() == [4, 5, 6, 7]
    assert q[32:36].tolist() == [32, 33, 34, 35] and q[-1] == 63


def test_valid_json_and_subsample_deterministic(digits):
    samples = [s for v in digits.splits.values() for s in v]
    assert (
        len(validate_dataset(json.loads(json.dumps(samples)), digits.specs, list(digits.specs.tasks))) == 1797
    )
    a = load_benchmark("digits", seed=1, n=100)
    b = load_benchmark("digits", seed=1, n=100)
    assert sum(len(v) for v in a.splits.values()) == 100
    assert [s["id"] for s in a.splits["test"]] == [s["id"] for s in b.splits["test"]]
    assert [s["id"] for s in a.splits["test"]] != [s["id"] for s in digits.splits["test"][:20]]
