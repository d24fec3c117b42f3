"""Simple fine-tuning: one model, every parameter trained on each new stage (the forgetting baseline)."""

from __future__ import annotations

from torch import nn

from flame_core.model import Flame
from flame_core.specs import SpecSet
from flame_core.strategies.base import NoOptions, Strategy, grow, numel


def train_everything(model: Flame, specs: SpecSet) -> list[nn.Parameter]:
    """Grow `model` for the stage, then make every parameter trainable; returns them all (shared by
    fine-tuning and EWC)."""
    grow(model, specs)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


class FinetuneStrategy(Strategy[NoOptions]):
    name = "finetune"
    options_type = NoOptions

    def wrap(self, model: Flame) -> nn.Module:
        self.model = model
        self.module = model
        return model

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        return train_everything(self.model, specs)

    def stage_parameters(self) -> int:
        return numel(self.model.parameters())  # every weight changed: a full copy per stage

    def serving_parameters(self) -> int:
        return numel(self.model.parameters())
