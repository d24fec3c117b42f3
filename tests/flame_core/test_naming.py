import pytest

from flame_core.model import build_flame
from flame_core.naming import (
    expert_weight_name,
    is_expert_weight,
    param_key,
    param_name,
    short_name,
)


def test_key_round_trip_on_every_parameter_of_a_model(mk):
    model = build_flame(mk.config(), mk.specs())
    names = [n for n, _ in model.named_parameters()]
    assert names
    for name in names:
        key = param_key(name)
        assert "." not in key
        assert param_name(key) == name


def test_key_refuses_a_name_that_would_not_round_trip():
    with pytest.raises(ValueError, match="a__b"):
        param_key("a__b.weight")


def test_expert_weight_check():
    assert is_expert_weight("blocks.0.moe.experts.3.fc1.weight")
    assert is_expert_weight("blocks.2.moe.experts.0.conv.weight")
    assert is_expert_weight(expert_weight_name(1, 2, "fc2"))
    assert not is_expert_weight("blocks.0.moe.experts.3.fc1.bias")
    assert not is_expert_weight("blocks.0.moe.experts.3.norm.weight")
    assert not is_expert_weight("blocks.0.routers.ts.proj.weight")
    assert not is_expert_weight("heads.t0.weight")
    with pytest.raises(ValueError, match="norm"):
        expert_weight_name(0, 0, "norm")


def test_short_name():
    assert short_name("blocks.0.moe.experts.3.fc1.weight") == "b0 e3 fc1"
    assert short_name("heads.t0.weight") == "heads.t0.weight"
