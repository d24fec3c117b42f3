"""LoRA per stage: rank-r adapters (B zero, A random) on the frozen model's matrices, selected by the
task's cursor; new router heads and task heads as in FLAME, but no truncation step.

The adapters are this module's: `lora_delta` is the stage delta `ContinualFlame.begin_stage` builds
for each stacked parameter, so the continual model itself carries no LoRA mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flame_core.batch import Batch
from flame_core.continual import ContinualFlame, StageDelta
from flame_core.model import Flame
from flame_core.specs import SpecSet
from flame_core.strategies.base import Strategy, numel
from flame_core.strategies.flame import stage_report, stored_model, stored_stage


@dataclass
class LoraOptions:
    """rank: adapter rank (capped by each matrix's shape); rank_budget: cap on each weight's cumulative
    rank (None: none)."""

    rank: int = 32
    rank_budget: int | None = None

    def __post_init__(self) -> None:
        self.rank = int(self.rank)
        if self.rank < 1:
            raise ValueError(f"lora option rank must be >= 1, got rank={self.rank!r}")


def lora_delta(rank: int) -> StageDelta:
    """Matrices get a trained `B A` of `rank` (B zero, A ~ N(0, 1/fan_in)); vectors get no delta."""

    def delta(name: str, p: nn.Parameter) -> tuple[nn.Parameter, nn.Parameter] | None:
        if p.dim() < 2:
            return None
        fan_in = p[0].numel()
        r = min(rank, p.shape[0], fan_in)
        b = nn.Parameter(torch.zeros(p.shape[0], r, device=p.device))
        return b, nn.Parameter(torch.randn(r, fan_in, device=p.device) / fan_in**0.5)

    return delta


class LoraStrategy(Strategy[LoraOptions]):
    """LoRA adapters per stage on a `ContinualFlame` (see `LoraOptions`)."""

    name = "lora"
    options_type = LoraOptions

    def wrap(self, model: Flame) -> nn.Module:
        self.cl = ContinualFlame(model, rank_budget=self.options.rank_budget)
        self.module = self.cl
        self._stage_extra = 0
        return self.cl

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        params = self.cl.begin_stage(specs, delta=lora_delta(self.options.rank))
        self._stage_extra = numel(self.cl.new_parameters())  # new heads and new modalities' modules
        return params

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        report = stage_report(self.cl.end_stage(rank=0), self._stage_extra)  # adapters keep their rank
        return {k: report[k] for k in ("new_modules", "ranks")} | {"mean_rank": float(self.options.rank)}

    def stage_parameters(self) -> int:
        return stored_stage(self.cl, self._stage_extra)

    def serving_parameters(self) -> int:
        return stored_model(self.cl)
