"""Payload bounds: a finite number is not enough. Values past a modality's `value_range` (or, with
none, +-MAX_ABS_VALUE), times past +-MAX_ABS_TIME and payloads with nothing observed are invalid."""

import copy

import pytest

from flame_core.specs import SpecSet
from flame_core.validation import SampleInvalid, validate_sample

from .test_validation import SPECS, good


@pytest.mark.parametrize("value", [1e20, 1e38, 1e300, -1e300, 1e6 + 1])
def test_values_past_the_global_bound_name_the_field(value: float) -> None:
    s = good()
    s["modalities"]["vitals"]["values"][0][0] = value
    with pytest.raises(SampleInvalid) as e:
        validate_sample(s, SPECS)
    assert e.value.field == "modalities.vitals.values[0][0]" and "accepted range" in e.value.message
    assert "value_range" in e.value.message  # says how to accept larger values


@pytest.mark.parametrize("value", [1e20, 1e300])
def test_times_past_the_bound_name_the_field(value: float) -> None:
    s = good()
    s["modalities"]["vitals"]["times"] = [0, 1, value]
    with pytest.raises(SampleInvalid) as e:
        validate_sample(s, SPECS)
    assert e.value.field == "modalities.vitals.times[2]"


def test_values_inside_the_global_bound_pass() -> None:
    s = good()
    s["modalities"]["vitals"]["values"][0][0] = -1e6
    s["modalities"]["emb"]["embedding"] = [1e6, 0.0]
    assert validate_sample(s, SPECS)["modalities"]["vitals"]["values"][0][0] == -1e6


def test_per_feature_value_ranges() -> None:
    d = SPECS.to_dict()
    d["modalities"]["labs"]["value_range"] = [[0, 10], None, [-1, 1], [0, 1e9]]
    specs = SpecSet.from_dict(d)
    assert specs.modalities["labs"].value_range == ((0.0, 10.0), None, (-1.0, 1.0), (0.0, 1e9))
    s = good()
    s["modalities"]["labs"]["values"] = [10, None, 1, 5e8]  # 5e8: past the global bound, inside its own
    validate_sample(s, specs)
    for j, v in [(0, 10.5), (2, -1.5), (3, -1)]:
        bad = copy.deepcopy(s)
        bad["modalities"]["labs"]["values"][j] = v
        with pytest.raises(SampleInvalid) as e:
            validate_sample(bad, specs)
        assert e.value.field == f"modalities.labs.values[{j}]"
    s["modalities"]["labs"]["values"][1] = 2e6  # null range: the global bound applies
    with pytest.raises(SampleInvalid, match="accepted range"):
        validate_sample(s, specs)
    assert SpecSet.from_dict(specs.to_dict()) == specs  # the per-feature form round-trips


@pytest.mark.parametrize(
    "payload",
    [
        {"times": [0.0], "values": [[None, None, None]]},
        {"times": [0.0, 1.0], "values": [[None, None, None], [None, None, None]]},
    ],
)
def test_a_series_with_nothing_observed_is_invalid(payload: dict) -> None:
    s = good()
    s["modalities"]["vitals"] = payload
    with pytest.raises(SampleInvalid, match="no observed value") as e:
        validate_sample(s, SPECS)
    assert e.value.field == "modalities.vitals.values"
    s = good()
    s["modalities"]["labs"] = {"values": [None] * 4}
    with pytest.raises(SampleInvalid, match="no observed value") as e:
        validate_sample(s, SPECS)
    assert e.value.field == "modalities.labs.values"


def test_messages_never_echo_a_whole_payload() -> None:
    s = good()
    s["modalities"]["labs"]["values"][0] = [0.5] * 10_000
    with pytest.raises(SampleInvalid) as e:
        validate_sample(s, SPECS)
    assert e.value.field == "modalities.labs.values[0]" and len(str(e.value)) < 300
