"""Simple fine-tuning: one model, every parameter trained on each new stage (the forgetting baseline)."""

from __future__ import annotations

from torch import nn

from flame_core.model import Flame
from flame_core.specs import SpecSet
from flame_core.strategies.base import Strategy, grow, numel


class FinetuneStrategy(Strategy):
    name = "finetune"

    def wrap(self, model: Flame) -> nn.Module:
        self.model = model
        self.module = model
        return model

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        grow(self.model, specs)
        params = list(self.model.parameters())
        for p in params:
            p.requires_grad_(True)
        return params

    def stage_parameters(self) -> int:
        return numel(self.model.parameters())  # every weight changed: a full copy per stage

    def serving_parameters(self) -> int:
        return numel(self.model.parameters())
