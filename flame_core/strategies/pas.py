"""PASs-MoE on FLAME (Pathway Activation Subspaces; arXiv 2601.13020), adapted: a fixed set of LoRA
pathways, no growth, no cursor.

What is kept from the method (see `../shared/reference/continual-methods.md`, section 3):
- every expert weight (conv flattened to `[out, in*k]`, fc1, fc2) of the frozen stage-0 model gets ONE
  rank-r LoRA `B A` (A ~ N(0, 0.01), B = 0), shared and trained by every later stage;
- PAS-guided reweighting: each router's logits get `beta * s_e(z)`, the pathway activation of expert
  e on the pooled summary z. Here s_e is the mean squared cosine between z and the rows of the
  expert's fc1 pathway A_e (the authors' prototype `a_cos` variant: bounded, so untrained random
  pathways give every expert the same ~1/d and do not reshuffle routing);
- PAS-aware rank stabilisation: after each stage, the importance of pathway row k of weight W is
  `I_k = a_k^T C a_k` (C the second moment of W's routed inputs on the stage's data), accumulated over
  stages; anchors move to the importance-weighted mean of the old anchor and the new rows. Later
  stages pay `lam * mean_k(I~_k (||a_k - a_k*||^2 + c_b ||b_k - b_k*||^2))`, with I~ = I / mean(I)
  clipped at 10 and only the top `top_p` share of rows kept.
Routers are shared and trained (the method's router is one learned router); new task heads and new
modalities' modules are trained at their stage. Everything else stays frozen. Without cursors,
earlier tasks can drift: that is what this baseline measures against FLAME.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from flame_core.batch import Batch
from flame_core.model import Flame, FlameOutput
from flame_core.naming import (
    expert_weight_name,
    is_expert_weight,
    kind_of,
    param_key,
    param_name,
    router_place,
)
from flame_core.routing import Router
from flame_core.specs import SpecSet
from flame_core.statistics import routed_second_moments
from flame_core.strategies.base import FlameWrapper, Strategy, grow, numel


class PasFlame(FlameWrapper):
    """A frozen `Flame` plus one shared rank-r LoRA per expert weight and PAS-reweighted routers."""

    def __init__(self, model: Flame, rank: int, beta: float) -> None:
        super().__init__()
        self.model, self.rank, self.beta = model, rank, beta
        self.a, self.b = nn.ParameterDict(), nn.ParameterDict()
        for name, p in model.named_parameters():
            p.requires_grad_(False)
            if is_expert_weight(name):
                fan_in, r = p[0].numel(), min(rank, p.shape[0], p[0].numel())
                self.a[param_key(name)] = nn.Parameter(torch.randn(r, fan_in, device=p.device) * 0.01)
                self.b[param_key(name)] = nn.Parameter(torch.zeros(p.shape[0], r, device=p.device))

    def hook_routers(self) -> None:
        """Every router (new modalities' too) reads its block's fc1 pathways. Called from stage 1 on:
        stage 0 stays the shared pretrained model, which random pathways would only add noise to."""
        for name, module in self.model.named_modules():
            if isinstance(module, Router):
                block = router_place(name)[0]
                module.logit_bias = lambda z, b=block: self.pas_bias(b, z)

    def pathways(self, block: int) -> torch.Tensor:
        """(E, r, d): the fc1 pathway rows of every expert of `block`."""
        n = self.model.config.n_experts
        return torch.stack([self.a[param_key(expert_weight_name(block, e, "fc1"))] for e in range(n)])

    def pas_bias(self, block: int, z: torch.Tensor) -> torch.Tensor:
        """beta * mean_k cos^2(z, a_{e,k}): (B, d) -> (B, E)."""
        a = F.normalize(self.pathways(block), dim=-1)  # (E, r, d)
        cos = torch.einsum("bd,erd->ber", F.normalize(z, dim=-1), a)
        return self.beta * cos.pow(2).mean(-1)

    def overrides(self) -> dict[str, torch.Tensor]:
        own = dict(self.model.named_parameters())
        out = {}
        for key, a in self.a.items():
            name = param_name(key)
            w = own[name]
            out[name] = w + (self.b[key] @ a).reshape(w.shape)
        return out

    def forward(self, batch: Batch, tasks: Sequence[str] | None = None) -> FlameOutput:
        return functional_call(self.model, self.overrides(), (batch, tasks), strict=False)


@dataclass
class PasOptions:
    """rank: LoRA rank per expert weight; beta: PAS reweighting; lam: stabilisation strength; c_b: B-side
    weight; top_p: share of the most important rows that are stabilised."""

    rank: int = 32
    beta: float = 4.0
    lam: float = 10.0
    c_b: float = 0.1
    top_p: float = 0.3

    def __post_init__(self) -> None:
        self.rank, self.beta, self.lam = int(self.rank), float(self.beta), float(self.lam)
        self.c_b, self.top_p = float(self.c_b), float(self.top_p)
        if self.rank < 1 or self.lam < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"pas options need rank >= 1, lam >= 0 and 0 < top_p <= 1, got {self}")


class PasStrategy(Strategy[PasOptions]):
    """Shared LoRA pathways with PAS reweighting and stabilisation (see `PasOptions`)."""

    name = "pas"
    options_type = PasOptions

    def __init__(self, options: PasOptions | None = None, /, **values: Any) -> None:
        super().__init__(options, **values)
        o = self.options
        self.rank, self.beta, self.lam, self.c_b, self.top_p = o.rank, o.beta, o.lam, o.c_b, o.top_p
        self.importance: dict[str, torch.Tensor] = {}  # per pathway row, accumulated over stages
        self.anchor_a: dict[str, torch.Tensor] = {}
        self.anchor_b: dict[str, torch.Tensor] = {}
        self._stage_new = 0

    def wrap(self, model: Flame) -> nn.Module:
        self.net = PasFlame(model, self.rank, self.beta)
        self.module = self.net
        return self.net

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        new = grow(self.net.model, specs)
        self.net.hook_routers()
        fresh = {id(p) for p in new}
        named = self.net.model.named_parameters()
        routers = [p for n, p in named if kind_of(n) == "router" and id(p) not in fresh]
        self._stage_new = numel(new)
        params = [*new, *routers, *self.net.a.values(), *self.net.b.values()]
        for p in params:
            p.requires_grad_(True)
        return params

    def weights(self) -> dict[str, torch.Tensor]:
        """I~: importance over its mean, clipped at 10, zero outside the top `top_p` share of rows."""
        if not self.importance:
            return {}
        flat = torch.cat(list(self.importance.values()))
        mean = flat.mean().clamp_min(1e-12)
        keep = max(1, int(round(self.top_p * flat.numel())))
        cut = flat.topk(keep).values[-1]
        return {
            k: torch.where(i >= cut, (i / mean).clamp_max(10.0), torch.zeros_like(i))
            for k, i in self.importance.items()
        }

    def penalty(self) -> torch.Tensor | None:
        weights = self.weights()
        if not weights or self.lam == 0:
            return None
        total, count = None, 0
        for key, w in weights.items():
            a, b = self.net.a[key], self.net.b[key]
            w = w.to(a.device)
            da = (a - self.anchor_a[key].to(a.device)).pow(2).sum(1)  # (r,)
            db = (b - self.anchor_b[key].to(b.device)).pow(2).sum(0)  # (r,)
            term = (w * (da + self.c_b * db)).sum()
            total = term if total is None else total + term
            count += w.numel()
        return None if total is None else self.lam * total / count

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        """Accumulate the stage's pathway importances; move anchors to the importance-weighted mean."""
        for p in self.net.parameters():
            p.requires_grad_(False)
        moments, _ = routed_second_moments(self.net, self.net.model, train_batch, tasks)
        for key, a in self.net.a.items():
            c = moments.get(param_name(key))
            new = (
                torch.zeros(a.shape[0], device=a.device)
                if c is None
                else ((a.detach() @ c.to(a.device)) * a.detach()).sum(1)
            )
            old = self.importance.get(key)
            if old is None:
                self.anchor_a[key], self.anchor_b[key] = a.detach().clone(), self.net.b[key].detach().clone()
                self.importance[key] = new
                continue
            total = (old + new).clamp_min(1e-12)
            wa, wn = (old / total), (new / total)
            self.anchor_a[key] = wa.unsqueeze(1) * self.anchor_a[key] + wn.unsqueeze(1) * a.detach()
            self.anchor_b[key] = (
                wa.unsqueeze(0) * self.anchor_b[key] + wn.unsqueeze(0) * self.net.b[key].detach()
            )
            self.importance[key] = old + new
        flat = torch.cat(list(self.importance.values()))
        return {"importance_mean": float(flat.mean()), "importance_max": float(flat.max())}

    def stage_parameters(self) -> int:
        # The adapters and routers changed; anchors and importances are kept beside them.
        adapters = numel(self.net.a.values()) + numel(self.net.b.values())
        routers = numel(p for n, p in self.net.model.named_parameters() if kind_of(n) == "router")
        return 2 * adapters + numel(self.importance.values()) + routers + self._stage_new

    def serving_parameters(self) -> int:
        return numel(self.net.model.parameters()) + numel(self.net.a.values()) + numel(self.net.b.values())
