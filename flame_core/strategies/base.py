"""The continual-learning strategy interface: a few hooks around the shared stage loop.

The loop (`flame_core.stream.run_stream`) pretrains stage 0 as multitask FLAME (then `wrap` and
`after_pretraining`), then for every later stage: `begin_stage` -> train the returned parameters on
the stage's tasks (loss + `penalty`)
-> `compress` (FLAME's truncation; if it returns parameters and `refit_epochs` > 0, they are refit
for that many epochs, keeping the truncated weights unless validation improves) -> `end_stage` ->
evaluate every task seen so far through `module`.

Each strategy's options are a dataclass (peft's `LoraConfig`), built from keyword options: an unknown
one is a ValueError naming it and the valid ones, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch
from torch import nn

from flame_core.batch import Batch
from flame_core.model import Flame
from flame_core.specs import SpecSet

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

OptionsT = TypeVar("OptionsT", bound="DataclassInstance")


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


@dataclass
class NoOptions:
    """The options of a strategy that has none."""


def make_options(options_type: type[OptionsT], strategy: str, values: Mapping[str, Any]) -> OptionsT:
    """`options_type(**values)`, refusing unknown keys by name (and listing the valid ones)."""
    valid = [f.name for f in fields(options_type)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise ValueError(f"unknown {strategy} option(s) {unknown}; valid options: {valid}")
    return options_type(**values)


class Strategy(Generic[OptionsT]):
    """Base class: subclasses override the hooks they need (at most one level of subclassing) and name
    their options dataclass in `options_type`."""

    name = "base"
    options_type: type[OptionsT]

    def __init__(self, options: OptionsT | None = None, /, **values: Any) -> None:
        """Either a ready options dataclass or its fields as keywords (`FlameStrategy(rank=8)`)."""
        if options is not None and values:
            raise ValueError(f"{self.name}: pass an options dataclass or keyword options, not both")
        if options is None:
            options = make_options(self.options_type, self.name, values)
        if not isinstance(options, self.options_type):
            raise ValueError(f"{self.name} options must be {self.options_type.__name__}, got {options!r}")
        self.options: OptionsT = options
        self.module: nn.Module | None = None

    def wrap(self, model: Flame) -> nn.Module:
        """Take the stage-0 multitask model; return the module that runs `module(batch, tasks)`."""
        self.module = model
        return model

    def after_pretraining(self, train_batch: Batch, tasks: Sequence[str]) -> None:
        """Called once after `wrap`, with the stage-0 training data (EWC's Fisher, CRAM's centroid)."""

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        """Grow for the stage's new tasks/modalities; return exactly the parameters to optimise."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor | None:
        """Extra loss term while training a stage (EWC); None for none."""
        return None

    @property
    def refit_epochs(self) -> int:
        """Epochs refitting what `compress` returns (0: no refit)."""
        return 0

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
