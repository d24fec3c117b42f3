import json

import pytest

from flame_core.specs import DEFAULT_MAX_LEN, HeadSpec, SpecError, SpecSet


def spec_dict() -> dict:
    return {
        "modalities": {
            "visits": {"kind": "timeseries", "dim": 3},
            "baseline": {"kind": "tabular", "dim": 16, "value_range": [0, 1]},
            "note": {"kind": "text", "max_len": 100},
        },
        "tasks": [
            {"name": "death", "modalities": ["visits", "baseline"], "head": {"type": "binary"}},
            {
                "name": "stage",
                "modalities": ["visits", "note"],
                "head": {"type": "multiclass", "classes": 4},
                "interaction": "concentrate",
            },
        ],
    }


def test_parse_round_trip_and_defaults() -> None:
    specs = SpecSet.from_dict(spec_dict())
    assert specs.modalities["visits"].max_len == DEFAULT_MAX_LEN["timeseries"]
    assert specs.modalities["baseline"].value_range == (0.0, 1.0)
    assert specs.tasks["stage"].head.out_dim == 4
    assert specs.tasks["stage"].interaction == "concentrate"
    again = SpecSet.from_dict(json.loads(json.dumps(specs.to_dict())))
    assert again == specs


def test_subset_keeps_only_used_modalities() -> None:
    sub = SpecSet.from_dict(spec_dict()).subset(["death"])
    assert list(sub.tasks) == ["death"]
    assert list(sub.modalities) == ["visits", "baseline"]
    with pytest.raises(SpecError) as e:
        SpecSet.from_dict(spec_dict()).subset(["nope"])
    assert e.value.field == "tasks"


def test_binary_head_may_name_its_two_classes() -> None:
    head = HeadSpec.from_dict({"type": "binary", "labels": ["alive", "dead"]})
    assert head.classes == 1 and head.labels == ("alive", "dead")


def _mutate(path: str, value: object) -> dict:
    d = spec_dict()
    target = d
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    target[keys[-1]] = value  # type: ignore[index]
    return d


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("modalities.visits.kind", "video", "modalities.visits.kind"),
        ("modalities.visits.dim", 0, "modalities.visits.dim"),
        ("modalities.visits.dim", "3", "modalities.visits.dim"),
        ("modalities.visits.dim", True, "modalities.visits.dim"),
        ("modalities.visits.max_len", -1, "modalities.visits.max_len"),
        ("modalities.visits.colour", "red", "modalities.visits"),
        ("modalities.baseline.value_range", [1, 0], "modalities.baseline.value_range"),
        ("modalities.baseline.value_range", 5, "modalities.baseline.value_range"),
        ("modalities.baseline.value_range", [0, 1, 2], "modalities.baseline.value_range"),
        ("modalities.baseline.value_range", ["a", "b"], "modalities.baseline.value_range"),
        ("modalities.bad name", {"kind": "tabular", "dim": 2}, "modalities.bad name"),
        ("tasks.0.head", {"type": "ordinal"}, "tasks.death.head.type"),
        ("tasks.0.head", {}, "tasks.death.head"),
        ("tasks.1.head", {"type": "multiclass", "classes": 1}, "tasks.stage.head.classes"),
        ("tasks.1.head", {"type": "multiclass", "classes": 3, "labels": ["a"]}, "tasks.stage.head.labels"),
        ("tasks.1.head", {"type": "multiclass", "labels": "abc"}, "tasks.stage.head.labels"),
        ("tasks.0.modalities", ["visits", "ecg"], "tasks.death.modalities"),
        ("tasks.0.modalities", [], "tasks.death.modalities"),
        ("tasks.0.modalities", ["visits", "visits"], "tasks.death.modalities"),
        ("tasks.0.modalities", "visits", "tasks.death.modalities"),
        ("tasks.0.interaction", "both", "tasks.death.interaction"),
        ("tasks.0.name", 7, "tasks.name"),
        ("tasks.1.name", "death", "tasks"),
        ("tasks", {"death": {}}, "tasks"),
    ],
)
def test_spec_errors_name_the_field(path: str, value: object, field: str) -> None:
    with pytest.raises(SpecError) as e:
        SpecSet.from_dict(_mutate(path, value))
    assert e.value.field == field
    assert str(e.value).startswith(field)


def test_load_reports_invalid_json(tmp_path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{"modalities": ')
    with pytest.raises(SpecError) as e:
        SpecSet.load(path)
    assert e.value.field == "$"
    path.write_text(json.dumps(spec_dict()))
    assert set(SpecSet.load(path).tasks) == {"death", "stage"}
