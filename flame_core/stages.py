"""A finished continual stage and the pure helpers around it: parameter kinds, the bit-reproducible
materialisation of `W_0 + sum_s B_s A_s`, and the capacity error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from flame_core.components import LowRank
from flame_core.naming import kind_of, param_key

__all__ = [
    "CapacityExceeded",
    "Stage",
    "check_budget",
    "group_by_cursor",
    "kind_of",
    "materialise",
    "param_key",
]


class CapacityExceeded(ValueError):
    """A stage would push some weight's cumulative reserved rank past the configured budget."""


def check_budget(
    stage: int, budget: int | None, reserved: Mapping[str, int], ranks: Mapping[str, int]
) -> None:
    """Refuse stage `stage` if its `ranks` (per weight name) on top of the `reserved` ones push any
    weight past `budget` (None: no budget)."""
    if budget is None:
        return
    over = {n: reserved.get(n, 0) + r for n, r in ranks.items() if reserved.get(n, 0) + r > budget}
    if over:
        worst = sorted(over.items(), key=lambda kv: -kv[1])[:5]
        raise CapacityExceeded(
            f"stage {stage} would exceed the reserved-rank budget {budget} on {len(over)} weights, e.g. "
            + ", ".join(f"{n} ({r})" for n, r in worst)
        )


def materialise(base: torch.Tensor, deltas: Sequence[LowRank | torch.Tensor]) -> torch.Tensor:
    """base + sum of deltas in float64 with elementwise ops only (rank-one updates, no matmul), so the
    result is bit-reproducible on any thread count; rounded to the base's dtype once at the end."""
    acc = base.detach().double().clone()
    for delta in deltas:
        if isinstance(delta, LowRank):
            mat = acc.view(acc.shape[0], -1)
            b, a = delta.b.double(), delta.a.double()
            for i in range(delta.rank):
                mat += b[:, i : i + 1] * a[i : i + 1, :]
        else:
            acc += delta.detach().double()
    return acc.to(base.dtype)


@dataclass
class Stage:
    """A finished stage: frozen deltas and router heads, by parameter name."""

    index: int
    tasks: list[str]
    modalities: list[str]
    new_modalities: list[str]
    deltas: dict[str, LowRank | torch.Tensor] = field(default_factory=dict)
    routers: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def ranks(self) -> dict[str, int]:
        return {n: d.rank for n, d in self.deltas.items() if isinstance(d, LowRank)}

    def stored_numel(self) -> int:
        return sum(d.numel if isinstance(d, LowRank) else d.numel() for d in self.deltas.values()) + sum(
            r.numel() for r in self.routers.values()
        )


def group_by_cursor(cursor: Mapping[str, int], tasks: Sequence[str]) -> list[tuple[int, list[str]]]:
    """Tasks grouped by their cursor, cursors ascending (one forward pass per group); unknown tasks
    are a ValueError naming the known ones."""
    unknown = [t for t in tasks if t not in cursor]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; known: {sorted(cursor)}")
    groups: dict[int, list[str]] = {}
    for t in tasks:
        groups.setdefault(cursor[t], []).append(t)
    return sorted(groups.items())
