"""CRAM on FLAME (adaptive-rank components with a novelty filter and centroid routing; arXiv
2606.02502), adapted. Task-agnostic: no cursor, so earlier tasks can drift when the mix shifts.

What is kept from the method (see `../shared/reference/continual-methods.md`, section 2), mapped
onto our stage hooks:
- buffer (`begin_stage` + training): a zero-initialised full delta per expert weight (conv flattened
  to `[out, in*k]`, fc1, fc2), used alone on top of the base, as in CRAM's warm-up;
- adaptive-rank instantiation (`compress`): the buffer's SVD directions with sigma above
  `tau_alloc` * sigma_1 whose right singular vector is novel (`||v - Q Q^T v|| > tau_novel`, Q the
  row space of earlier slots' A) become the new slot, at least `r_min` (padded with the largest
  remaining sigmas) and at most `r_max`; kept rows are projected off Q; B = U sqrt(S), A = sqrt(S) V;
- stable phase (the refit epochs): the slot is trained with the orthogonality penalty
  `lam_dec * gamma * E||Q_B^T B A x||^2` (Q_B the column space of earlier slots' B, gamma the routing
  mass on earlier slots, x the weight's routed inputs, via their second moment);
- inference: per forward, the query q is the batch mean of the L2-normalised pooled modality
  features (CRAM's code also routes per batch); slot weights are `softmax(-||q - c_s||^2 / 2 sigma^2)`
  over every committed slot (stage 0's is the zero delta), c_s the running mean of q in stage s.
Departures: one task group (no level-1 grouping); centroids are running means, not trained; the
FLAME routers of known modalities stay frozen, new modalities' modules and new heads are trained.
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
from flame_core.components import as_matrix
from flame_core.model import Flame, FlameOutput, masked_mean
from flame_core.naming import is_expert_weight, param_key, param_name
from flame_core.specs import SpecSet
from flame_core.statistics import routed_second_moments
from flame_core.strategies.base import FlameWrapper, Strategy, grow, numel


def orthonormal_rows(rows: list[torch.Tensor], dim: int) -> torch.Tensor:
    """(n, dim) orthonormal basis of the span of the stacked rows ((0, dim) when there are none)."""
    if not rows:
        return torch.zeros(0, dim)
    stacked = torch.cat(rows).double()
    u, s, vh = torch.linalg.svd(stacked, full_matrices=False)
    return vh[s > s[0] * 1e-8].float() if len(s) else torch.zeros(0, dim)


def instantiate(
    buffer: torch.Tensor, old_a: torch.Tensor, tau_alloc: float, tau_novel: float, r_min: int, r_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CRAM's adaptive-rank slot from a trained buffer: (B (out, r), A (r, in)), A's rows off span(old_a)."""
    d = as_matrix(buffer).double()
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    q = old_a.double()
    novelty = (vh - (vh @ q.T) @ q).norm(dim=1) / vh.norm(dim=1).clamp_min(1e-12)
    strong = s > tau_alloc * s[0] if float(s[0]) > 0 else torch.zeros_like(s, dtype=torch.bool)
    keep = [i for i in range(len(s)) if strong[i] and novelty[i] > tau_novel][:r_max]
    if not keep:
        keep = [int(novelty.argmax())] if float(s[0]) > 0 else []
    for i in range(len(s)):  # pad to r_min with the largest remaining sigmas that are not old
        if len(keep) >= min(r_min, r_max):
            break
        if i not in keep and novelty[i] > 1e-3:
            keep.append(i)
    v = vh[keep] - (vh[keep] @ q.T) @ q
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    root = s[keep].sqrt()
    return (u[:, keep] * root).float(), (root.unsqueeze(1) * v).float()


class CramFlame(FlameWrapper):
    """A frozen `Flame`, committed slots `{weight: (B, A)}` with centroids, and the open stage's parts."""

    def __init__(self, model: Flame, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma
        for p in model.parameters():
            p.requires_grad_(False)
        self.slots: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [{}]  # stage 0: the base itself
        self.centroids: list[torch.Tensor] = []  # one per slot, set when its stage ends
        self.buffer = nn.ParameterDict()  # open stage, before compress
        self.new_b, self.new_a = nn.ParameterDict(), nn.ParameterDict()  # open stage, after compress
        self._q_sum: torch.Tensor | None = None
        self._q_count = 0

    def query(self, batch: Batch, tasks: Sequence[str]) -> torch.Tensor:
        """(d,): batch mean of the L2-normalised pooled encoder features of the tasks' modalities."""
        mods = {m for t in tasks for m in self.specs.tasks[t].modalities}
        feats = []
        with torch.no_grad():
            for m in sorted(mods):
                mb = batch.modalities.get(m)
                if mb is None or not bool(mb.present.any()):
                    continue
                x, mask = self.model.encoders[m](mb)
                pooled = F.normalize(masked_mean(x, mask), dim=-1)[mb.present & mask.any(1)]
                feats.append(pooled)
        if not feats:
            return torch.zeros(self.config.d_model, device=next(self.model.parameters()).device)
        return torch.cat(feats).mean(0)

    def forward(self, batch: Batch, tasks: Sequence[str] | None = None) -> FlameOutput:
        names = list(self.specs.tasks) if tasks is None else list(tasks)
        if len(self.centroids) < len(self.slots):
            raise RuntimeError("stage 0 has no centroid yet: call CramStrategy.after_pretraining first")
        batch = batch.to(next(self.model.parameters()).device)
        q = self.query(batch, names)
        if self.training and (self.buffer or self.new_b):
            self._observe(q)  # the open stage's training batches define its centroid
        deltas: dict[str, torch.Tensor] = {}
        if self.buffer:  # warm-up: the buffer alone, as CRAM routes 100% to it
            deltas = {param_name(k): p for k, p in self.buffer.items()}
        else:
            weights = self.mix(q, with_open=bool(self.new_b))
            parts = [*self.slots, {param_name(k): (b, self.new_a[k]) for k, b in self.new_b.items()}]
            for w, slot in zip(weights, parts, strict=False):
                for name, (b, a) in slot.items():
                    term = w * (b @ a)
                    deltas[name] = deltas[name] + term if name in deltas else term
        own = dict(self.model.named_parameters())
        over = {n: own[n] + d.reshape(own[n].shape) for n, d in deltas.items()}
        return functional_call(self.model, over, (batch, names), strict=False)

    def mix(self, q: torch.Tensor, with_open: bool = False) -> torch.Tensor:
        """Softmax over the slots of -||q - c_s||^2 / (2 sigma^2); with `with_open`, the open stage's
        slot joins last with its running centroid."""
        cs = [*self.centroids, self.running_centroid()] if with_open else list(self.centroids)
        c = torch.stack(cs).to(q.device)
        return torch.softmax(-(q - c).pow(2).sum(1) / (2 * self.sigma**2), dim=0)

    def _observe(self, q: torch.Tensor) -> None:
        self._q_sum = q.detach() if self._q_sum is None else self._q_sum + q.detach()
        self._q_count += 1

    def reset_running_centroid(self) -> None:
        self._q_sum, self._q_count = None, 0

    @property
    def observed(self) -> int:
        """Training batches of the open stage seen so far (they define its centroid)."""
        return self._q_count

    def running_centroid(self) -> torch.Tensor:
        if self._q_sum is None:
            raise RuntimeError("the open stage has no centroid yet: no training batch of it has been seen")
        return self._q_sum / self._q_count


@dataclass
class CramOptions:
    """tau_alloc (relative to sigma_1), tau_novel, r_min, r_max, sigma (on unit-norm features), lam_dec,
    refit_epochs (the stable phase)."""

    tau_alloc: float = 0.08
    tau_novel: float = 0.99
    r_min: int = 4
    r_max: int = 10
    sigma: float = 0.25
    lam_dec: float = 1.0
    refit_epochs: int = 3

    def __post_init__(self) -> None:
        self.tau_alloc, self.tau_novel = float(self.tau_alloc), float(self.tau_novel)
        self.r_min, self.r_max, self.refit_epochs = int(self.r_min), int(self.r_max), int(self.refit_epochs)
        self.sigma, self.lam_dec = float(self.sigma), float(self.lam_dec)
        if not 1 <= self.r_min <= self.r_max or self.sigma <= 0:
            raise ValueError(f"cram options need 1 <= r_min <= r_max and sigma > 0, got {self}")


class CramStrategy(Strategy[CramOptions]):
    """CRAM's buffer, adaptive-rank slots and centroid routing (see `CramOptions`)."""

    name = "cram"
    options_type = CramOptions

    def __init__(self, options: CramOptions | None = None, /, **values: Any) -> None:
        super().__init__(options, **values)
        o = self.options
        self.tau_alloc, self.tau_novel, self.r_min, self.r_max = o.tau_alloc, o.tau_novel, o.r_min, o.r_max
        self.sigma, self.lam_dec = o.sigma, o.lam_dec
        self._dec: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # weight -> (Q_B, C)
        self._gamma = 0.0
        self._new: list[nn.Parameter] = []

    @property
    def refit_epochs(self) -> int:
        return self.options.refit_epochs

    def wrap(self, model: Flame) -> nn.Module:
        self.net = CramFlame(model, self.sigma)
        self.module = self.net
        return self.net

    def after_pretraining(self, train_batch: Batch, tasks: Sequence[str]) -> None:
        self.net.centroids.append(self.net.query(train_batch, tasks))  # stage 0's slot: the base

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        self._new = grow(self.net.model, specs)  # expert pools never grow: every expert is old
        for name, p in self.net.model.named_parameters():
            if is_expert_weight(name):
                self.net.buffer[param_key(name)] = nn.Parameter(torch.zeros_like(p))
        self.net.reset_running_centroid()
        return [*self._new, *self.net.buffer.values()]

    def compress(self, train_batch: Batch, tasks: Sequence[str]) -> list[nn.Parameter]:
        """Instantiate the slot from the buffer; prepare the orthogonality penalty of the stable phase."""
        net = self.net
        moments, _ = routed_second_moments(net, net.model, train_batch, tasks)
        old = net.slots[1:]
        for key, buf in list(net.buffer.items()):
            name = param_name(key)
            q_a = orthonormal_rows([s[name][1] for s in old if name in s], as_matrix(buf).shape[1])
            b, a = instantiate(
                buf.detach(), q_a.to(buf.device), self.tau_alloc, self.tau_novel, self.r_min, self.r_max
            )
            net.new_b[key], net.new_a[key] = nn.Parameter(b), nn.Parameter(a)
            q_b = orthonormal_rows([s[name][0].T for s in old if name in s], b.shape[0])
            if q_b.shape[0] and name in moments:
                self._dec[key] = (q_b.T.to(buf.device), moments[name].to(buf.device))
        net.buffer = nn.ParameterDict()
        net.eval()
        with torch.no_grad():
            q = net.query(train_batch, tasks)
            self._gamma = float(1 - net.mix(q, with_open=True)[-1])  # routing mass on earlier slots
        return [*self._new, *net.new_b.values(), *net.new_a.values()]

    def penalty(self) -> torch.Tensor | None:
        """lam_dec * gamma * mean_w tr(Q^T B A C A^T B^T Q): the new slot's output energy inside the
        old slots' output span, on the weight's routed inputs."""
        if not self._dec or not self.net.new_b or self.lam_dec == 0 or self._gamma == 0:
            return None
        terms = []
        for key, (q_b, c) in self._dec.items():
            m = q_b.T @ self.net.new_b[key] @ self.net.new_a[key]  # (n_old, in)
            terms.append(((m @ c) * m).sum())
        return self.lam_dec * self._gamma * torch.stack(terms).mean()

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        net = self.net
        if net.buffer:  # no compress was run (refit disabled by the caller): instantiate now
            self.compress(train_batch, tasks)
        slot = {
            param_name(k): (b.detach().clone(), net.new_a[k].detach().clone()) for k, b in net.new_b.items()
        }
        centroid = net.running_centroid() if net.observed else net.query(train_batch, tasks)
        net.slots.append(slot)
        net.centroids.append(centroid)
        net.new_b, net.new_a = nn.ParameterDict(), nn.ParameterDict()
        self._dec, self._gamma = {}, 0.0
        for p in net.model.parameters():
            p.requires_grad_(False)
        ranks = [a.shape[0] for _, a in slot.values()]
        self._last = sum(b.numel() + a.numel() for b, a in slot.values()) + centroid.numel()
        return {
            "mean_rank": sum(ranks) / max(len(ranks), 1),
            "max_rank": max(ranks, default=0),
            "new_modules": numel(self._new),
        }

    def stage_parameters(self) -> int:
        return self._last + numel(self._new)

    def serving_parameters(self) -> int:
        slots = sum(b.numel() + a.numel() for s in self.net.slots for b, a in s.values())
        return numel(self.net.model.parameters()) + slots + sum(c.numel() for c in self.net.centroids)
