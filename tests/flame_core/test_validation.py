import copy
import json
import math

import pytest

from flame_core.specs import SpecSet
from flame_core.validation import SampleInvalid, validate_dataset, validate_sample

SPECS = SpecSet.from_dict(
    {
        "modalities": {
            "vitals": {"kind": "timeseries", "dim": 3, "max_len": 5},
            "labs": {"kind": "tabular", "dim": 4, "value_range": [0, 100]},
            "note": {"kind": "text", "max_len": 40},
            "emb": {"kind": "embedding", "dim": 2, "max_len": 3},
            "xray": {"kind": "image", "dim": 2},
            "rgb": {"kind": "image", "dim": 2, "channels": 3},
        },
        "tasks": [
            {"name": "death", "modalities": ["vitals", "labs", "note"], "head": {"type": "binary"}},
            {
                "name": "stage",
                "modalities": ["vitals", "emb"],
                "head": {"type": "multiclass", "labels": ["a", "b", "c"]},
            },
            {"name": "pheno", "modalities": ["vitals", "xray"], "head": {"type": "multilabel", "classes": 3}},
            {"name": "los", "modalities": ["labs", "rgb"], "head": {"type": "regression"}},
        ],
    }
)


def good() -> dict:
    return {
        "id": "p1",
        "modalities": {
            "vitals": {"times": [0, 1.5, 1.5], "values": [[1, None, 3], [None, None, None], [4, 5, 6.5]]},
            "labs": {"values": [1, None, 99.5, 0]},
            "note": {"text": "Patient stable, no fever."},
            "emb": {"embedding": [0.1, -0.2]},
            "xray": {"pixels": [[0, 1], [2, 3]]},
            "rgb": {"pixels": [[[0, 1], [1, 0]]] * 3},
        },
        "labels": {"death": 1, "stage": "b", "pheno": [0, 1, 1], "los": 3},
    }


def test_good_sample_is_normalised() -> None:
    out = validate_sample(good(), SPECS)
    assert out["id"] == "p1"
    assert out["labels"] == {"death": 1, "stage": 1, "pheno": [0, 1, 1], "los": 3.0}
    assert isinstance(out["labels"]["los"], float)
    assert out["modalities"]["emb"] == {"embeddings": [[0.1, -0.2]], "times": [0.0]}
    assert out["modalities"]["xray"]["pixels"] == [[[0, 1], [2, 3]]]
    assert out["modalities"]["vitals"]["values"][1] == [None, None, None]


def edit(path: str, value: object) -> dict:
    """Copy of good() with the value at a dotted path (ints index lists) replaced or, for ..., deleted."""
    s = copy.deepcopy(good())
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    target = s
    for k in keys[:-1]:
        target = target[k]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return s


V = "modalities.vitals"
BAD_PAYLOADS = [
    # (path, new value, expected field, expected modality)
    (f"{V}.values.1.2", float("nan"), f"{V}.values[1][2]", "vitals"),
    (f"{V}.values.0.0", float("inf"), f"{V}.values[0][0]", "vitals"),
    (f"{V}.values.0.0", -float("inf"), f"{V}.values[0][0]", "vitals"),
    (f"{V}.values.0.1", "NaN", f"{V}.values[0][1]", "vitals"),
    (f"{V}.values.0.1", True, f"{V}.values[0][1]", "vitals"),
    (f"{V}.values.0.1", 10**400, f"{V}.values[0][1]", "vitals"),
    (f"{V}.values.2", [1, 2], f"{V}.values[2]", "vitals"),
    (f"{V}.values.2", 7, f"{V}.values[2]", "vitals"),
    (f"{V}.times.2", 1.0, f"{V}.times[2]", "vitals"),
    (f"{V}.times.0", float("nan"), f"{V}.times[0]", "vitals"),
    (f"{V}.times.1", None, f"{V}.times[1]", "vitals"),
    (f"{V}.times", [0, 1], f"{V}.times", "vitals"),
    (f"{V}.values", [], f"{V}.values", "vitals"),
    (f"{V}", {"times": list(range(6)), "values": [[1, 2, 3]] * 6}, f"{V}.values", "vitals"),
    (f"{V}.value", [[1, 2, 3]], f"{V}.value", "vitals"),
    (f"{V}.times", ..., f"{V}.times", "vitals"),
    (f"{V}", [[1, 2, 3]], f"{V}", "vitals"),
    ("modalities.labs.values", [1, 2, 3], "modalities.labs.values", "labs"),
    ("modalities.labs.values.1", 100.5, "modalities.labs.values[1]", "labs"),
    ("modalities.labs.values.3", -1, "modalities.labs.values[3]", "labs"),
    ("modalities.note.text", "x" * 41, "modalities.note.text", "note"),
    ("modalities.note.text", 42, "modalities.note.text", "note"),
    ("modalities.note.text", " ... ", "modalities.note.text", "note"),
    ("modalities.emb.embedding", [1.0], "modalities.emb.embedding", "emb"),
    ("modalities.emb.embedding", [None, 1.0], "modalities.emb.embedding[0]", "emb"),
    ("modalities.emb", {"embeddings": [[1, 2]] * 4}, "modalities.emb.embeddings", "emb"),
    ("modalities.emb", {"embeddings": [[1, 2], [3, 4]], "times": [2, 1]}, "modalities.emb.times[1]", "emb"),
    ("modalities.emb", {"embedding": [1, 2], "embeddings": [[1, 2]]}, "modalities.emb", "emb"),
    ("modalities.xray.pixels", [[0, 1, 2], [0, 1, 2], [0, 1, 2]], "modalities.xray.pixels", "xray"),
    ("modalities.xray.pixels", [[0, 1], [2]], "modalities.xray.pixels[1]", "xray"),
    ("modalities.xray.pixels", [[0, float("nan")], [2, 3]], "modalities.xray.pixels[0][1]", "xray"),
    ("modalities.rgb.pixels", [[0, 1], [1, 0]], "modalities.rgb.pixels", "rgb"),
    ("modalities.rgb.pixels", [[[0, 1], [1, 0]]] * 2, "modalities.rgb.pixels", "rgb"),
    ("modalities.ecg", {"values": [1]}, "modalities.ecg", "ecg"),
]


@pytest.mark.parametrize(("path", "value", "field", "modality"), BAD_PAYLOADS)
def test_bad_payload_names_field_and_modality(path: str, value: object, field: str, modality: str) -> None:
    with pytest.raises(SampleInvalid) as e:
        validate_sample(edit(path, value), SPECS, index=7)
    err = e.value
    assert (err.field, err.modality, err.sample) == (field, modality, 7)
    text = str(err)
    assert "sample 7" in text and f"field {field}" in text and repr(modality) in text


BAD_LABELS = [
    ("labels.death", True, "labels.death", "death"),
    ("labels.death", 2, "labels.death", "death"),
    ("labels.death", "1", "labels.death", "death"),
    ("labels.death", 0.5, "labels.death", "death"),
    ("labels.stage", 3, "labels.stage", "stage"),
    ("labels.stage", -1, "labels.stage", "stage"),
    ("labels.stage", 1.5, "labels.stage", "stage"),
    ("labels.stage", "z", "labels.stage", "stage"),
    ("labels.pheno", [0, 1], "labels.pheno", "pheno"),
    ("labels.pheno", 1, "labels.pheno", "pheno"),
    ("labels.pheno", [0, 2, 1], "labels.pheno[1]", "pheno"),
    ("labels.pheno", [True, 0, 1], "labels.pheno[0]", "pheno"),
    ("labels.los", "3.2", "labels.los", "los"),
    ("labels.los", float("nan"), "labels.los", "los"),
    ("labels.los", True, "labels.los", "los"),
    ("labels.los", [3.2], "labels.los", "los"),
    ("labels.mortality", 1, "labels.mortality", "mortality"),
]


@pytest.mark.parametrize(("path", "value", "field", "task"), BAD_LABELS)
def test_bad_label_names_field_and_task(path: str, value: object, field: str, task: str) -> None:
    with pytest.raises(SampleInvalid) as e:
        validate_sample(edit(path, value), SPECS)
    assert (e.value.field, e.value.task, e.value.modality) == (field, task, None)
    assert f"task {task!r}" in str(e.value)


def test_integral_float_labels_are_accepted() -> None:
    s = edit("labels.death", 1.0)
    s["labels"]["pheno"] = [0.0, 1, 1.0]
    out = validate_sample(s, SPECS)
    assert out["labels"]["death"] == 1 and type(out["labels"]["death"]) is int
    assert out["labels"]["pheno"] == [0, 1, 1]


def test_sample_without_any_modality_of_its_task() -> None:
    s = {"modalities": {"emb": {"embedding": [1, 2]}}, "labels": {"death": 0}}
    with pytest.raises(SampleInvalid) as e:
        validate_sample(s, SPECS)
    assert (e.value.task, e.value.field) == ("death", "modalities")
    # The same sample is fine for a task that reads `emb`.
    assert validate_sample({"modalities": s["modalities"]}, SPECS, ["stage"])["labels"] == {}
    with pytest.raises(SampleInvalid) as e:
        validate_sample({"modalities": s["modalities"]}, SPECS, ["los", "stage"])
    assert e.value.task == "los"
    with pytest.raises(SampleInvalid) as e:
        validate_sample({"modalities": {}}, SPECS)
    assert e.value.field == "modalities"


def test_single_label_needs_exactly_one_task() -> None:
    s = {"modalities": good()["modalities"], "label": 1}
    with pytest.raises(SampleInvalid) as e:
        validate_sample(s, SPECS)
    assert e.value.field == "label"
    with pytest.raises(SampleInvalid) as e:
        validate_sample(s, SPECS, ["death", "los"])
    assert e.value.field == "label"
    assert validate_sample(s, SPECS, ["death"])["labels"] == {"death": 1}
    with pytest.raises(SampleInvalid) as e:
        validate_sample({**s, "label": 5}, SPECS, ["death"])
    assert (e.value.field, e.value.task) == ("label", "death")
    with pytest.raises(SampleInvalid) as e:
        validate_sample({**s, "labels": {"death": 1}}, SPECS, ["death"])
    assert e.value.field == "label"
    one_task = SPECS.subset(["death"])
    single = {"modalities": {"labs": {"values": [1, 2, 3, 4]}}, "label": 0}
    assert validate_sample(single, one_task)["labels"] == {"death": 0}


def test_tasks_in_play_and_required_labels() -> None:
    s = good()
    s["labels"] = {"death": 1, "stage": None}
    assert validate_sample(s, SPECS)["labels"] == {"death": 1}  # None means "no label"
    assert validate_sample(s, SPECS, ["stage"])["labels"] == {}  # labels of other tasks are dropped
    with pytest.raises(SampleInvalid) as e:
        validate_sample(s, SPECS, ["death", "stage"], require_label=True)
    assert (e.value.field, e.value.task) == ("labels.stage", "stage")
    with pytest.raises(SampleInvalid) as e:
        validate_sample({"modalities": s["modalities"]}, SPECS, require_label=True)
    assert e.value.field == "labels"
    with pytest.raises(ValueError, match="unknown tasks"):
        validate_sample(s, SPECS, ["nope"])


def test_sample_structure_errors() -> None:
    cases = [
        ([1, 2], "$"),
        ({"modalities": []}, "modalities"),
        ({"labels": {}}, "modalities"),
        ({**good(), "extra": 1}, "extra"),
        ({**good(), "id": 1.5}, "id"),
        ({**good(), "labels": [1]}, "labels"),
    ]
    for sample, field in cases:
        with pytest.raises(SampleInvalid) as e:
            validate_sample(sample, SPECS)
        assert e.value.field == field, sample


def test_json_nan_literal_is_rejected() -> None:
    line = '{"modalities": {"labs": {"values": [1, NaN, 2, 3]}}}'
    with pytest.raises(SampleInvalid) as e:
        validate_sample(json.loads(line), SPECS)
    assert e.value.field == "modalities.labs.values[1]"
    assert "NaN" in e.value.message
    assert math.isnan(json.loads(line)["modalities"]["labs"]["values"][1])


def test_validate_dataset_reports_first_bad_index() -> None:
    bad = edit("modalities.vitals.times.2", 0.5)
    with pytest.raises(SampleInvalid) as e:
        validate_dataset([good(), good(), bad, edit("labels.death", 7)], SPECS)
    assert (e.value.sample, e.value.field) == (2, "modalities.vitals.times[2]")
    assert e.value.to_dict()["field"] == "modalities.vitals.times[2]"
    out = validate_dataset([good(), {"id": 5, "modalities": {"labs": {"values": [1, 2, 3, 4]}}}], SPECS)
    assert [s["id"] for s in out] == ["p1", "5"]
    assert out[1]["labels"] == {}


def test_sample_id_used_when_no_index() -> None:
    with pytest.raises(SampleInvalid) as e:
        validate_sample(edit("labels.death", 3), SPECS)
    assert e.value.sample == "p1"
