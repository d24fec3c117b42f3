"""FLAME-CL: zero-initialised stage deltas on the frozen model, truncated by routed-input energy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from flame_core.batch import Batch
from flame_core.continual import ContinualFlame, Stage
from flame_core.model import Flame
from flame_core.specs import SpecSet
from flame_core.statistics import routed_second_moments
from flame_core.strategies.base import Strategy, numel


@dataclass
class FlameOptions:
    """rank: int or "auto"; energy: target share for "auto"; rank_budget: cap on each weight's
    cumulative rank (None: none); refit_epochs: epochs refitting the truncated factors, router and task
    heads of the stage."""

    rank: int | str = "auto"
    energy: float = 0.99
    rank_budget: int | None = None
    refit_epochs: int = 3

    def __post_init__(self) -> None:
        self.refit_epochs = int(self.refit_epochs)


def stage_report(stage: Stage, new_modules: int) -> dict[str, Any]:
    """Facts about a finished stage of a `ContinualFlame` (shared by the flame and lora strategies)."""
    ranks = stage.ranks
    return {
        "new_modules": new_modules,  # new task heads and new modalities' modules, stored in full
        "ranks": ranks,
        "mean_rank": sum(ranks.values()) / max(len(ranks), 1),
        "max_rank": max(ranks.values(), default=0),
    }


def stored_stage(cl: ContinualFlame, new_modules: int) -> int:
    """Parameters the last stage stored: its deltas and router heads plus its new modules."""
    return cl.stages[-1].stored_numel() + new_modules


def stored_model(cl: ContinualFlame) -> int:
    """Everything kept to serve every task: the model and every stage's stored tensors."""
    return numel(cl.model.parameters()) + sum(s.stored_numel() for s in cl.stages)


class FlameStrategy(Strategy[FlameOptions]):
    """FLAME's continual stages (see `FlameOptions`)."""

    name = "flame"
    options_type = FlameOptions

    def wrap(self, model: Flame) -> nn.Module:
        self.cl = ContinualFlame(model, rank_budget=self.options.rank_budget)
        self.module = self.cl
        self._stage_extra = 0
        return self.cl

    @classmethod
    def resume(cls, cl: ContinualFlame, **options: Any) -> FlameStrategy:
        """The strategy continuing an existing continual model (a registered version, in the service)."""
        strategy = cls(**options)
        strategy.cl = strategy.module = cl
        strategy._stage_extra = 0
        return strategy

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        params = self.cl.begin_stage(specs)
        self._stage_extra = numel(self.cl.new_parameters())  # new heads and new modalities' modules
        return params

    @property
    def refit_epochs(self) -> int:
        return self.options.refit_epochs

    def compress(self, train_batch: Batch, tasks: Sequence[str]) -> list[nn.Parameter]:
        moments, _ = routed_second_moments(self.cl, self.cl.model, train_batch, tasks)
        self.cl.compress(rank=self.options.rank, energy=self.options.energy, second_moments=moments)
        return self.cl.stage_parameters()

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        return stage_report(self.cl.end_stage(), self._stage_extra)

    def stage_parameters(self) -> int:
        return stored_stage(self.cl, self._stage_extra)

    def serving_parameters(self) -> int:
        return stored_model(self.cl)
