"""The continual-learning strategy interface: a few hooks around the shared stage loop.

The loop (`flame_core.stream.run_stream`) pretrains stage 0 as multitask FLAME, then for every
later stage: `begin_stage` -> train the returned parameters on the stage's tasks (loss + `penalty`)
-> `compress` (FLAME's truncation; if it returns parameters and `refit_epochs` > 0, they are refit
for that many epochs, keeping the truncated weights unless validation improves) -> `end_stage` ->
evaluate every task seen so far through `module`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flame_core.batch import Batch
from flame_core.model import Flame
from flame_core.specs import SpecSet


def numel(params: Sequence[torch.Tensor] | Any) -> int:
    return int(sum(p.numel() for p in params))


def grow(model: Flame, specs: SpecSet) -> list[nn.Parameter]:
    """Extend `model` for a stage's new tasks and modalities; return the new parameters, trainable."""
    before = {id(p) for p in model.parameters()}
    model.extend(specs)
    new = [p for p in model.parameters() if id(p) not in before]
    for p in new:
        p.requires_grad_(True)
    return new


class FlameWrapper(nn.Module):
    """A module that runs a wrapped `Flame` (`self.model`) with a strategy's own extra parts; it answers
    `specs` and `config` as the model does, which is all the training loop asks of it."""

    model: Flame

    @property
    def specs(self) -> SpecSet:
        return self.model.specs

    @property
    def config(self):  # type: ignore[no-untyped-def]
        return self.model.config


class Strategy:
    """Base class: subclasses override the hooks they need (at most one level of subclassing)."""

    name = "base"

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.module: nn.Module | None = None

    def wrap(self, model: Flame) -> nn.Module:
        """Take the stage-0 multitask model; return the module that runs `module(batch, tasks)`."""
        self.module = model
        return model

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        """Grow for the stage's new tasks/modalities; return exactly the parameters to optimise."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor | None:
        """Extra loss term while training a stage (EWC); None for none."""
        return None

    @property
    def refit_epochs(self) -> int:
        return int(self.options.get("refit_epochs", 0))

    def compress(self, train_batch: Batch, tasks: Sequence[str]) -> list[nn.Parameter] | None:
        """Shrink what the stage trained (FLAME: truncate to rank r); return the parameters that may be
        refit afterwards ([] for none), or None when the strategy changes nothing here."""
        return None

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        """Called after training; returns facts worth reporting (ranks, pre-truncation scores, ...)."""
        return {}

    def stage_parameters(self) -> int:
        """Parameters the last stage added or changed that must be stored to serve its tasks."""
        raise NotImplementedError

    def serving_parameters(self) -> int:
        """Everything kept to serve every task seen so far (method-attributable, with the base)."""
        raise NotImplementedError
