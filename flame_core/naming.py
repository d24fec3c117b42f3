"""Parameter and stage naming in one place: a `Flame` parameter's dotted name, its `ParameterDict` key
(dots are not allowed there) and back, and which names are expert weights."""

from __future__ import annotations

EXPERT_WEIGHTS: tuple[str, ...] = ("conv.weight", "fc1.weight", "fc2.weight")
SEPARATOR = "__"


def param_key(name: str) -> str:
    """`blocks.0.moe.experts.3.fc1.weight` -> `blocks__0__moe__experts__3__fc1__weight`."""
    if SEPARATOR in name:
        raise ValueError(f"parameter name {name!r} contains {SEPARATOR!r}: it would not round-trip")
    return name.replace(".", SEPARATOR)


def param_name(key: str) -> str:
    """The inverse of `param_key`."""
    return key.replace(SEPARATOR, ".")


def expert_weight_name(block: int, expert: int, weight: str) -> str:
    """The name of an expert's matrix, `weight` one of conv, fc1, fc2."""
    if f"{weight}.weight" not in EXPERT_WEIGHTS:
        raise ValueError(f"unknown expert weight {weight!r}; choose from conv, fc1, fc2")
    return f"blocks.{block}.moe.experts.{expert}.{weight}.weight"


def is_expert_weight(name: str) -> bool:
    """`blocks.{i}.moe.experts.{e}.{conv,fc1,fc2}.weight`."""
    parts = name.split(".")
    return len(parts) == 7 and parts[2:4] == ["moe", "experts"] and ".".join(parts[-2:]) in EXPERT_WEIGHTS


def short_name(name: str) -> str:
    """`blocks.0.moe.experts.3.fc1.weight` -> `b0 e3 fc1`; other names unchanged."""
    if is_expert_weight(name):
        parts = name.split(".")
        return f"b{parts[1]} e{parts[4]} {parts[5]}"
    return name


def kind_of(name: str) -> str:
    """'head' (per task), 'router' (per stage) or 'stacked' (base + per-stage deltas)."""
    if name.startswith("heads."):
        return "head"
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2 and parts[2] == "routers":
        return "router"
    return "stacked"


def router_place(name: str) -> tuple[int, str]:
    """(block, modality) of a router parameter `blocks.{b}.routers.{modality}...`."""
    if kind_of(name) != "router":
        raise ValueError(f"{name!r} is not a router parameter")
    parts = name.split(".")
    return int(parts[1]), parts[3]


# ---- stage tensors in a continual checkpoint ------------------------------------------------------
STAGE_PARTS: tuple[str, ...] = ("router", "full", "b", "a")


def stage_tensor_key(stage: int, name: str, part: str) -> str:
    """`stage{i}.router.{name}` for a router head, `stage{i}.delta.{name}.{full,b,a}` for a delta."""
    if part == "router":
        return f"stage{stage}.router.{name}"
    if part in STAGE_PARTS:
        return f"stage{stage}.delta.{name}.{part}"
    raise ValueError(f"unknown stage tensor part {part!r}; choose from {STAGE_PARTS}")


def parse_stage_tensor_key(key: str) -> tuple[int, str, str] | None:
    """The inverse of `stage_tensor_key`: (stage, parameter name, part), or None for another key."""
    head, _, rest = key.partition(".")
    digits = head[len("stage") :]
    if not head.startswith("stage") or not digits.isdigit() or str(int(digits)) != digits:
        return None
    kind, _, rest = rest.partition(".")
    if kind == "router":
        return int(digits), rest, "router"
    name, _, part = rest.rpartition(".")
    if kind == "delta" and part in STAGE_PARTS[1:]:
        return int(digits), name, part
    return None
