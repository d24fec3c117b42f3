"""Continual-learning strategies, one module each, behind `strategies.base.Strategy`."""

from __future__ import annotations

from typing import Any

from flame_core.strategies.base import Strategy

STRATEGIES: tuple[str, ...] = ("flame", "finetune", "ewc", "lora", "expand", "pas", "cram")


def build_strategy(name: str, **options: Any) -> Strategy[Any]:
    """A fresh strategy by name; options are the fields of its options dataclass (rank, energy, lam,
    ...): an unknown one is a ValueError naming it and listing the valid ones."""
    if name == "flame":
        from flame_core.strategies.flame import FlameStrategy

        return FlameStrategy(**options)
    if name == "finetune":
        from flame_core.strategies.finetune import FinetuneStrategy

        return FinetuneStrategy(**options)
    if name == "lora":
        from flame_core.strategies.lora import LoraStrategy

        return LoraStrategy(**options)
    if name == "ewc":
        from flame_core.strategies.ewc import EwcStrategy

        return EwcStrategy(**options)
    if name == "expand":
        from flame_core.strategies.expand import ExpandStrategy

        return ExpandStrategy(**options)
    if name == "pas":
        from flame_core.strategies.pas import PasStrategy

        return PasStrategy(**options)
    if name == "cram":
        from flame_core.strategies.cram import CramStrategy

        return CramStrategy(**options)
    raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
