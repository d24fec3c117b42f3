import json
import math
import time

import numpy as np
import pytest

from flame_core.benchmarks import BENCHMARKS, BenchmarkData, load_benchmark
from flame_core.benchmarks.synthetic_icu import TASKS, true_risks
from flame_core.validation import validate_dataset


@pytest.fixture(scope="module")
def full() -> tuple[BenchmarkData, float]:
    start = time.process_time()  # CPU time: robust to other jobs sharing the machine
    data = load_benchmark("synthetic-icu", seed=0)
    return data, time.process_time() - start


def _all(data: BenchmarkData) -> list[dict]:
    return [s for split in ("train", "val", "test") for s in data.splits[split]]


def test_registry_lists_names_and_rejects_unknown():
    assert BENCHMARKS == ("synthetic-icu", "digits", "support2", "pbc2")
    with pytest.raises(ValueError, match="synthetic-icu, digits, support2, pbc2"):
        load_benchmark("mnist")
    with pytest.raises(ValueError, match="n="):
        load_benchmark("synthetic-icu", n=3)


def test_default_size_and_speed(full):
    data, seconds = full
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes == {"train": 3000, "val": 1000, "test": 1000}
    assert seconds < 10.0
    ids = [s["id"] for s in _all(data)]
    assert len(set(ids)) == 5000


def test_deterministic_by_seed():
    a = load_benchmark("synthetic-icu", seed=3, n=200)
    b = load_benchmark("synthetic-icu", seed=3, n=200)
    c = load_benchmark("synthetic-icu", seed=4, n=200)
    assert json.dumps(a.splits, sort_keys=True) == json.dumps(b.splits, sort_keys=True)
    assert a.achievable == b.achievable
    assert json.dumps(a.splits["train"][:5]) != json.dumps(c.splits["train"][:5])


def test_achievable_auroc_in_band(full):
    data, _ = full
    assert set(data.achievable) == set(TASKS) == set(data.specs.tasks)
    for task, auc in data.achievable.items():
        assert 0.75 <= auc <= 0.95, (task, auc)
    assert data.primary_metric == {t: "auroc" for t in TASKS}


def test_samples_are_plain_json_and_valid(full):
    data, _ = full
    samples = _all(data)
    text = json.dumps(samples, allow_nan=False)  # no NaN, no numpy scalars
    assert json.loads(text) == samples
    validated = validate_dataset(samples, data.specs, list(data.specs.tasks))
    assert len(validated) == 5000
    phenotype = data.specs.tasks["phenotype"].head
    assert phenotype.type == "multilabel" and phenotype.classes == 25
    assert all(len(s["labels"]["phenotype"]) == 25 for s in samples)


def test_modalities_missing_per_sample_but_never_all_of_a_task(full):
    data, _ = full
    samples = _all(data)
    for task, spec in data.specs.tasks.items():
        present = np.array([[m in s["modalities"] for m in spec.modalities] for s in samples])
        assert present.any(axis=1).all(), task
        assert (~present).any(axis=1).mean() > 0.1, task  # modalities do go missing for this task
    vitals = [s["modalities"]["vitals"] for s in samples if "vitals" in s["modalities"]]
    values = [v for p in vitals for row in p["values"] for v in row]
    missing = sum(v is None for v in values) / len(values)
    assert 0.2 < missing < 0.35
    steps = [len(p["times"]) for p in vitals]
    assert min(steps) >= 8 and max(steps) <= 40 and len(set(steps)) > 10
    assert all(
        p["times"] == sorted(p["times"]) and p["times"][0] >= 0 and p["times"][-1] <= 48 for p in vitals
    )


def test_readmission_unlabelled_after_death(full):
    data, _ = full
    samples = _all(data)
    died = [s for s in samples if s["labels"]["mortality"] == 1]
    assert died and all(s["labels"]["readmission"] is None for s in died)
    alive = [s["labels"]["readmission"] for s in samples if s["labels"]["mortality"] == 0]
    assert set(alive) == {0, 1}


def test_true_risks_follow_the_latent_causes():
    z = np.zeros((2, 5))
    z[1, 0] = 2.0  # much higher severity
    risks = true_risks(z)
    assert risks["mortality"][1] > risks["mortality"][0] + 0.3
    assert risks["acuity"][1].argmax() == 3 and math.isclose(risks["acuity"][0].sum(), 1.0)
    assert risks["phenotype"].shape == (2, 25)
