"""FLAME-CL: zero-initialised stage deltas on the frozen model, truncated by routed-input energy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from flame_core.batch import Batch
from flame_core.continual import ContinualFlame
from flame_core.model import Flame
from flame_core.specs import SpecSet
from flame_core.statistics import routed_second_moments
from flame_core.strategies.base import Strategy, numel


class FlameStrategy(Strategy):
    """Options: rank (int or "auto"), energy (target share for "auto"), rank_budget, refit_epochs
    (epochs refitting the truncated factors, router and task heads of the stage; default 3)."""

    name = "flame"

    def wrap(self, model: Flame) -> nn.Module:
        self.cl = ContinualFlame(model, rank_budget=self.options.get("rank_budget"))
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
        return int(self.options.get("refit_epochs", 3))

    def compress(self, train_batch: Batch, tasks: Sequence[str]) -> list[nn.Parameter]:
        moments, _ = routed_second_moments(self.cl, self.cl.model, train_batch, tasks)
        self.cl.compress(
            rank=self.options.get("rank", "auto"),
            energy=self.options.get("energy", 0.99),
            second_moments=moments,
        )
        return self.cl.stage_parameters()

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        ranks = self.cl.end_stage().ranks
        return {
            "new_modules": self._stage_extra,  # new task heads and new modalities' modules, stored in full
            "ranks": ranks,
            "mean_rank": sum(ranks.values()) / max(len(ranks), 1),
            "max_rank": max(ranks.values(), default=0),
        }

    def stage_parameters(self) -> int:
        return self.cl.stages[-1].stored_numel() + self._stage_extra

    def serving_parameters(self) -> int:
        return numel(self.cl.model.parameters()) + sum(s.stored_numel() for s in self.cl.stages)
