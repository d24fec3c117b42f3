"""Online EWC: fine-tuning (`train_everything`: every parameter trained in each stage) plus a quadratic
pull of the shared parameters towards their values after the last stage, weighted by an accumulated
diagonal Fisher (Kirkpatrick et al. 2017; Schwarz et al. 2018).

Shared ("stacked") parameters are everything except task heads: encoders, attention, norms, experts
and the one router per modality (there are no per-stage router heads here). Heads are per task, so a
later stage never trains an old head and they need no penalty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flame_core.batch import Batch
from flame_core.losses import task_loss
from flame_core.model import Flame
from flame_core.naming import kind_of
from flame_core.specs import SpecSet
from flame_core.strategies.base import Strategy, numel
from flame_core.strategies.finetune import train_everything

FISHER_BATCH = 64
FISHER_MAX_BATCHES = 20


def is_shared(name: str) -> bool:
    """Everything but the per-task heads is shared by tasks of several stages."""
    return kind_of(name) != "head"


def diagonal_fisher(
    model: nn.Module,
    batch: Batch,
    tasks: Sequence[str],
    *,
    batch_size: int = FISHER_BATCH,
    max_batches: int = FISHER_MAX_BATCHES,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher of the shared parameters from minibatch gradients of the summed task
    losses (true labels): the squared gradient of each minibatch mean times its size, an estimate of
    the per-sample Fisher (so `lam` has its usual scale), averaged over at most `max_batches`
    minibatches of a fixed random order. Eval mode: dropout and router noise only add variance."""
    if batch.size == 0:
        raise ValueError("batch is empty: the Fisher needs labelled samples of the stage's tasks")
    if batch_size < 1 or max_batches < 1:
        raise ValueError(f"batch_size ({batch_size}) and max_batches ({max_batches}) must be >= 1")
    specs: SpecSet = model.specs  # type: ignore[assignment]
    named = [(n, p) for n, p in model.named_parameters() if is_shared(n)]
    flags = [p.requires_grad for _, p in named]
    was_training = model.training
    model.eval()
    device = named[0][1].device
    order = torch.randperm(batch.size, generator=torch.Generator().manual_seed(seed))
    fisher = {n: torch.zeros_like(p) for n, p in named}
    heads = {t: specs.tasks[t].head for t in tasks}
    used = 0
    try:
        for p in (p for _, p in named):
            p.requires_grad_(True)
        for start in range(0, batch.size, batch_size):
            if used == max_batches:
                break
            sub = batch.select(order[start : start + batch_size]).to(device)
            out = model(sub, tasks)
            loss = torch.stack(
                [task_loss(heads[t], out.outputs[t], sub.labels[t], sub.label_mask[t]) for t in tasks]
            )
            grads = torch.autograd.grad(loss.sum(), [p for _, p in named], allow_unused=True)
            for (n, _), g in zip(named, grads, strict=True):
                if g is not None:
                    fisher[n] += g.detach().pow(2) * sub.size
            used += 1
    finally:
        for (_, p), flag in zip(named, flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return {n: f / used for n, f in fisher.items()}


@dataclass
class EwcOptions:
    """lam: penalty strength (300.0: of 10..10000 tried on the synthetic-icu and digits smoke streams, it
    at least halved fine-tuning's forgetting and still learned the new tasks nearly as well); gamma:
    decay of the old Fisher."""

    lam: float = 300.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        given = (self.lam, self.gamma)
        try:
            self.lam, self.gamma = float(self.lam), float(self.gamma)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"ewc options lam and gamma must be numbers, got lam={given[0]!r}, gamma={given[1]!r}"
            ) from exc
        if not self.lam >= 0:
            raise ValueError(f"ewc option lam must be >= 0, got lam={given[0]!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"ewc option gamma must be in [0, 1], got gamma={given[1]!r}")


class EwcStrategy(Strategy[EwcOptions]):
    """Fine-tuning with the EWC penalty (see `EwcOptions`)."""

    name = "ewc"
    options_type = EwcOptions

    def __init__(self, options: EwcOptions | None = None, /, **values: Any) -> None:
        super().__init__(options, **values)
        self.lam, self.gamma = self.options.lam, self.options.gamma
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.consolidations = 0

    def wrap(self, model: Flame) -> nn.Module:
        self.model = model
        self.module = model
        return model

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        return train_everything(self.model, specs)

    def after_pretraining(self, train_batch: Batch, tasks: Sequence[str]) -> None:
        """Fisher and anchor of the stage-0 tasks, so stage 1 already protects them."""
        self.consolidate(train_batch, tasks)

    def penalty(self) -> torch.Tensor | None:
        """lam/2 * sum_i F_i (theta_i - theta*_i)^2 over the shared parameters that have a Fisher."""
        if not self.fisher or self.lam == 0:
            return None
        total = None
        for name, p in self.model.named_parameters():
            f = self.fisher.get(name)
            if f is None:
                continue  # born this stage: nothing to protect yet
            if f.device != p.device:
                self.fisher[name] = f = f.to(p.device)
                self.anchor[name] = self.anchor[name].to(p.device)
            term = (f * (p - self.anchor[name]).pow(2)).sum()
            total = term if total is None else total + term
        return None if total is None else 0.5 * self.lam * total

    def consolidate(self, train_batch: Batch, tasks: Sequence[str]) -> None:
        """Online merge F <- gamma * F_old + F_new; the anchor becomes the current parameters."""
        new = diagonal_fisher(self.model, train_batch, tasks, seed=self.consolidations)
        for name, f in new.items():
            old = self.fisher.get(name)
            self.fisher[name] = f if old is None else self.gamma * old.to(f.device) + f
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters() if is_shared(n)}
        self.consolidations += 1

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        self.consolidate(train_batch, tasks)
        flat = torch.cat([f.flatten() for f in self.fisher.values()])
        return {"fisher_mean": float(flat.mean()), "fisher_max": float(flat.max()), "penalised": flat.numel()}

    def stage_parameters(self) -> int:
        # Every weight changed; the Fisher is kept beside them. The anchor is the stage's own weights.
        return numel(self.model.parameters()) + numel(self.fisher.values())

    def serving_parameters(self) -> int:
        return numel(self.model.parameters())
