import pytest

from flame_core.model import build_flame
from flame_core.naming import (
    expert_weight_name,
    is_expert_weight,
    kind_of,
    param_key,
    param_name,
    parse_stage_tensor_key,
    router_place,
    short_name,
    stage_tensor_key,
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


def test_kinds_and_router_place():
    assert kind_of("heads.mortality.proj.weight") == "head"
    assert kind_of("blocks.1.routers.ts.w_gate") == "router"
    assert kind_of("blocks.1.moe.experts.0.fc1.weight") == "stacked"
    assert kind_of("encoders.ts.proj.weight") == "stacked"
    assert router_place("blocks.1.routers.ts.w_gate") == (1, "ts")
    with pytest.raises(ValueError, match="not a router"):
        router_place("heads.t0.weight")


def test_stage_tensor_keys_round_trip_in_the_checkpoint_format():
    name = "blocks.0.moe.experts.3.fc1.weight"
    assert stage_tensor_key(2, name, "b") == f"stage2.delta.{name}.b"
    assert stage_tensor_key(2, name, "full") == f"stage2.delta.{name}.full"
    router = "blocks.0.routers.ts.w_gate"
    assert stage_tensor_key(10, router, "router") == f"stage10.router.{router}"
    for part in ("router", "full", "b", "a"):
        assert parse_stage_tensor_key(stage_tensor_key(7, name, part)) == (7, name, part)
    others = ("model.blocks.0.attn.qkv.weight", "stage1.delta.x.c", "stage01.router.x", "stagex.router.x")
    for other in others:
        assert parse_stage_tensor_key(other) is None
    with pytest.raises(ValueError, match="part"):
        stage_tensor_key(1, name, "c")
