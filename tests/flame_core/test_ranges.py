"""Training ranges: observed per feature, fixed per task, and the fields of a sample outside them."""

import pytest

from flame_core.checkpoint import load_continual, save_continual
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.ranges import MAX_REPORTED, observed_ranges, outside_ranges, record_training_ranges
from flame_core.specs import SpecSet

SPECS = SpecSet.from_dict(
    {
        "modalities": {
            "vitals": {"kind": "timeseries", "dim": 2},
            "labs": {"kind": "tabular", "dim": 3},
            "cxr": {"kind": "embedding", "dim": 2},
            "xray": {"kind": "image", "dim": 2},
            "note": {"kind": "text"},
        },
        "tasks": [
            {"name": "death", "modalities": ["vitals", "labs", "note"], "head": {"type": "binary"}},
            {"name": "finding", "modalities": ["cxr", "xray"], "head": {"type": "binary"}},
        ],
    }
)
TRAIN = [
    {
        "modalities": {
            "vitals": {"times": [0.0, 2.0], "values": [[1.0, None], [3.0, 10.0]]},
            "labs": {"values": [0.5, None, None]},
            "note": {"text": "stable"},
        },
        "labels": {"death": 0},
    },
    {
        "modalities": {"labs": {"values": [-0.5, 2.0, None]}, "cxr": {"embedding": [0.0, 1.0]}},
        "labels": {"death": 1},
    },
    {
        "modalities": {"cxr": {"embedding": [-1.0, 4.0]}, "xray": {"pixels": [[0, 1], [2, 3]]}},
        "labels": {"finding": 1},
    },
]


def test_observed_ranges_per_feature_and_times() -> None:
    r = observed_ranges(TRAIN, SPECS, ["vitals", "labs", "note", "cxr"])
    assert r["vitals"] == {"values": [[1.0, 3.0], [10.0, 10.0]], "times": [0.0, 2.0]}
    assert r["labs"] == {"values": [[-0.5, 0.5], [2.0, 2.0], None], "times": None}  # feature 2 never seen
    assert r["cxr"]["values"] == [[-1.0, 0.0], [1.0, 4.0]]
    assert "note" not in r  # text has no numeric range


def test_each_task_records_only_its_labelled_samples_once() -> None:
    ranges: dict = {}
    record_training_ranges(ranges, TRAIN, SPECS, ["death", "finding"])
    assert set(ranges["death"]) == {"vitals", "labs"} and set(ranges["finding"]) == {"cxr", "xray"}
    assert ranges["finding"]["cxr"]["values"] == [[-1.0, -1.0], [4.0, 4.0]]  # only the finding sample
    assert ranges["finding"]["xray"]["values"] == [[0.0, 3.0]]  # one range for all pixels
    with pytest.raises(ValueError, match="never change"):
        record_training_ranges(ranges, TRAIN, SPECS, ["death"])


def test_outside_ranges_names_fields_with_their_range() -> None:
    ranges: dict = {}
    record_training_ranges(ranges, TRAIN, SPECS, ["death", "finding"])
    inside = {
        "modalities": {"vitals": {"times": [1.0], "values": [[2.0, None]]}, "labs": {"values": [0, 2, None]}}
    }
    assert outside_ranges(inside, SPECS, ranges["death"]) == ([], 0)
    sample = {
        "modalities": {
            "vitals": {"times": [1.0, 50.0], "values": [[0.0, 10.0], [None, 11.0]]},
            "labs": {"values": [0.0, None, 7.0]},
        }
    }
    found, total = outside_ranges(sample, SPECS, ranges["death"])
    assert total == 4
    assert found == [
        {"field": "modalities.vitals.values[0][0]", "low": 1.0, "high": 3.0},
        {"field": "modalities.vitals.values[1][1]", "low": 10.0, "high": 10.0},
        {"field": "modalities.vitals.times[1]", "low": 0.0, "high": 2.0},
        {"field": "modalities.labs.values[2]", "low": None, "high": None},  # never observed in training
    ]
    img = {"modalities": {"xray": {"pixels": [[0, 1], [9, 3]]}, "cxr": {"embedding": [-1.0, 5.0]}}}
    found, total = outside_ranges(img, SPECS, ranges["finding"])
    assert [f["field"] for f in found] == ["modalities.cxr.embedding[1]", "modalities.xray.pixels[0][1][0]"]


def test_outside_ranges_reports_at_most_max_reported() -> None:
    ranges = {"vitals": {"values": [[0.0, 1.0], [0.0, 1.0]], "times": None}}
    steps = 40
    sample = {
        "modalities": {"vitals": {"times": [float(t) for t in range(steps)], "values": [[5.0, 5.0]] * steps}}
    }
    found, total = outside_ranges(sample, SPECS, ranges)
    assert total == 2 * steps and len(found) == MAX_REPORTED


def test_ranges_travel_with_a_continual_checkpoint(tmp_path, mk) -> None:  # type: ignore[no-untyped-def]
    specs = mk.specs()
    cl = ContinualFlame(build_flame(mk.config(), specs))
    task = next(iter(specs.tasks))
    cl.training_ranges[task] = {"m": {"values": [[0.0, 1.0]], "times": None}}
    save_continual(tmp_path, cl)
    loaded, _ = load_continual(tmp_path)
    assert loaded.training_ranges == cl.training_ranges
