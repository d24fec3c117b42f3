"""The FLAME model: per-modality encoders, blocks of self-attention + sparse MoE, one head per task.

A modality counts as present for a sample when its `present` flag is set and its encoder produced at
least one valid token (a time series with no observed value is treated as absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from flame_core.batch import Batch
from flame_core.config import FlameConfig
from flame_core.encoders import build_encoder
from flame_core.experts import MoELayer, fast_dropout
from flame_core.heads import TaskHead
from flame_core.losses import balance_loss, interaction_loss
from flame_core.routing import Router, RouterOutput
from flame_core.specs import SpecSet


class Routing(NamedTuple):
    """Per-modality explanation: experts (B, k) long, weights (B, k) (rows sum to 1 where present,
    0 where absent), present (B,) bool, and the router's pooled summary (B, d) (zeros where absent)."""

    experts: torch.Tensor
    weights: torch.Tensor
    present: torch.Tensor
    summary: torch.Tensor | None = None


class FlameOutput(NamedTuple):
    """outputs[task]: (B, out_dim) raw logits / values. aux_loss is already weighted:
    balance_coef * balance_loss + interaction_coef * interaction_loss; in eval mode the three losses
    are not computed and are zero (nothing reads them outside training). routing is from the last block."""

    outputs: dict[str, torch.Tensor]
    aux_loss: torch.Tensor
    balance_loss: torch.Tensor
    interaction_loss: torch.Tensor
    routing: dict[str, Routing]


class SelfAttention(nn.Module):
    """Multi-head self-attention over valid steps (plain `qkv` / `out` Linears, fused SDPA kernel).
    Regularised by dropout on the residual branch only (attention-weight dropout costs more than it adds).

    A row with no valid step would softmax over nothing (NaN); such rows attend everywhere and the
    caller zeroes them, since padded and absent rows are masked out downstream anyway."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bsz, steps, d = x.shape
        q, k, v = self.qkv(x).view(bsz, steps, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        allowed = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]  # (B, 1, 1, L)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, L, d/H)
        return self.out(a.transpose(1, 2).reshape(bsz, steps, d))  # (B, L, d)


class FlameBlock(nn.Module):
    """Per-modality pre-norm self-attention + residual, then pre-norm MoE + residual. The expert pool is
    shared by all modalities of the block; norms, attention and routers are per modality."""

    def __init__(
        self,
        attn_norm: nn.ModuleDict,
        attn: nn.ModuleDict,
        moe_norm: nn.ModuleDict,
        routers: nn.ModuleDict,
        moe: MoELayer,
        dropout: float,
    ) -> None:
        """Takes its parts (see `build_block`), so a view can share some of another block's."""
        super().__init__()
        self.attn_norm, self.attn, self.moe_norm = attn_norm, attn, moe_norm
        self.routers, self.moe, self.dropout = routers, moe, dropout

    def with_pool(self, routers: Mapping[str, Router], moe: MoELayer) -> FlameBlock:
        """A block sharing this one's attention and norms, with other router heads and expert pool."""
        view = FlameBlock(self.attn_norm, self.attn, self.moe_norm, nn.ModuleDict(routers), moe, self.dropout)
        view.training = self.training  # this flag only: the shared parts keep their own
        return view

    def forward(
        self, xs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, RouterOutput]]:
        """Per modality: x (B, L, d) with zeros on padding, mask (B, L), present (B,). Returns the new x
        per modality and its routing; the MoE runs once for all modalities (one shared pool)."""
        normed: dict[str, torch.Tensor] = {}
        routes: dict[str, RouterOutput] = {}
        out: dict[str, torch.Tensor] = {}
        for m, x in xs.items():
            mask = masks[m]
            keep = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
            a = self.attn[m](self.attn_norm[m](x), mask)  # (B, L, d)
            out[m] = x + fast_dropout(a, self.dropout, self.training) * keep  # (B, L, d)
            normed[m] = self.moe_norm[m](out[m])
            routes[m] = self.routers[m](normed[m], mask, present[m])
        names = list(xs)
        moe = self.moe(
            [normed[m] for m in names], [masks[m] for m in names], [routes[m].gates for m in names]
        )
        return {m: out[m] + y for m, y in zip(names, moe, strict=True)}, routes


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, d), (B, L) -> (B, d); rows without valid steps give zeros."""
    keep = mask.unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class Flame(nn.Module):
    """One encoder per modality in `specs`, `n_blocks` FLAME blocks, one head per task."""

    def __init__(
        self,
        config: FlameConfig,
        specs: SpecSet,
        encoders: nn.ModuleDict,
        blocks: nn.ModuleList,
        heads: nn.ModuleDict,
    ) -> None:
        """Takes its parts (see `build_flame`), so a view can share another model's modules."""
        super().__init__()
        self.config, self.specs = config, specs
        self.encoders, self.blocks, self.heads = encoders, blocks, heads

    def extend(self, specs: SpecSet) -> tuple[list[str], list[str]]:
        """Grow the model for `specs` (a superset of the current ones, see `SpecSet.merge`): fresh
        encoders, attention, norms and routers for new modalities and fresh heads for new tasks.
        Existing modules are left exactly as they are. Returns (new modalities, new tasks)."""
        merged = self.specs.merge(
            SpecSet(
                modalities={m: s for m, s in specs.modalities.items()},
                tasks={t: s for t, s in specs.tasks.items() if t not in self.specs.tasks},
            )
        )
        new_mods = [m for m in merged.modalities if m not in self.specs.modalities]
        new_tasks = [t for t in merged.tasks if t not in self.specs.tasks]
        cfg, d = self.config, self.config.d_model
        device = next(self.parameters()).device
        for m in new_mods:
            self.encoders[m] = build_encoder(merged.modalities[m], cfg).to(device)
            for block in self.blocks:
                assert isinstance(block, FlameBlock)
                block.attn_norm[m] = nn.LayerNorm(d).to(device)
                block.attn[m] = SelfAttention(d, cfg.n_heads).to(device)
                block.moe_norm[m] = nn.LayerNorm(d).to(device)
                block.routers[m] = Router(d, cfg.n_experts, cfg.top_k, cfg.gating, cfg.noise).to(device)
        for t in new_tasks:
            spec = merged.tasks[t]
            self.heads[t] = TaskHead(spec.modalities, d, spec.head.out_dim).to(device)
        self.specs = merged
        return new_mods, new_tasks

    def _absent(self, bsz: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Routing]:
        k = self.config.top_k
        none = torch.zeros(bsz, dtype=torch.bool, device=device)
        routing = Routing(
            torch.zeros(bsz, k, dtype=torch.long, device=device), torch.zeros(bsz, k, device=device), none
        )
        return torch.zeros(bsz, self.config.d_model, device=device), none, routing

    def forward(self, batch: Batch, tasks: Sequence[str] | None = None) -> FlameOutput:
        """Runs only the modalities the requested tasks need (`tasks=None`: every task in the specs)."""
        task_names = list(self.specs.tasks) if tasks is None else list(tasks)
        unknown = [t for t in task_names if t not in self.specs.tasks]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; known: {sorted(self.specs.tasks)}")
        task_specs = [self.specs.tasks[t] for t in task_names]
        needed = [m for m in self.specs.modalities if any(m in t.modalities for t in task_specs)]
        device = next(self.parameters()).device
        bsz = batch.size
        summaries: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        routing: dict[str, Routing] = {}
        xs: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        for m in needed:
            mb = batch.modalities.get(m)
            if mb is None or not bool(mb.present.any()):
                summaries[m], present[m], routing[m] = self._absent(bsz, device)
                continue
            if mb.kind != self.specs.modalities[m].kind:
                raise ValueError(
                    f"modality {m!r}: batch kind {mb.kind!r} != spec kind {self.specs.modalities[m].kind!r}"
                )
            xs[m], masks[m] = self.encoders[m](mb)  # (B, L, d), (B, L)
            present[m] = mb.present & masks[m].any(dim=1)  # (B,)
        per_block: list[dict[str, RouterOutput]] = []
        if xs:
            for block in self.blocks:
                xs, routes = block(xs, masks, {m: present[m] for m in xs})
                per_block.append(routes)
        for m, x in xs.items():
            summaries[m] = masked_mean(x, masks[m])  # (B, d)
            last = per_block[-1][m]
            routing[m] = Routing(last.experts, last.weights, present[m], last.summary)
        routing = {m: routing[m] for m in needed}
        outputs = {t.name: self.heads[t.name](summaries, present) for t in task_specs}
        if not self.training:  # inference: the aux losses only train the routers (~9% of a forward)
            zero = torch.zeros((), device=device)
            return FlameOutput(outputs, zero, zero, zero, routing)
        balance = balance_loss([r for routes in per_block for r in routes.values()], device=device)
        inter = torch.zeros((), device=device)
        for routes in per_block:
            inter = inter + interaction_loss(task_specs, routes, device=device)
        aux = self.config.balance_coef * balance + self.config.interaction_coef * inter
        return FlameOutput(outputs, aux, balance, inter, routing)


def merge_outputs(outs: Sequence[FlameOutput]) -> FlameOutput:
    """One output for several cursor passes: outputs and routing united, aux losses summed."""
    if len(outs) == 1:
        return outs[0]
    merged = FlameOutput({}, outs[0].aux_loss * 0, outs[0].balance_loss * 0, outs[0].interaction_loss * 0, {})
    for o in outs:
        merged.outputs.update(o.outputs)
        merged.routing.update(o.routing)
        merged = merged._replace(
            aux_loss=merged.aux_loss + o.aux_loss,
            balance_loss=merged.balance_loss + o.balance_loss,
            interaction_loss=merged.interaction_loss + o.interaction_loss,
        )
    return merged


def build_flame(config: FlameConfig, specs: SpecSet) -> Flame:
    """The FLAME model for `specs`: one encoder and router per modality, one head per task."""
    if not specs.tasks:
        raise ValueError("specs has no tasks: FLAME needs at least one task head")
    names = list(specs.modalities)
    encoders = nn.ModuleDict({m: build_encoder(specs.modalities[m], config) for m in names})
    blocks = nn.ModuleList(build_block(names, config) for _ in range(config.n_blocks))
    heads = nn.ModuleDict(
        {t: TaskHead(spec.modalities, config.d_model, spec.head.out_dim) for t, spec in specs.tasks.items()}
    )
    return Flame(config, specs, encoders, blocks, heads)


def build_block(modalities: Sequence[str], config: FlameConfig) -> FlameBlock:
    """A FLAME block with fresh per-modality norms, attention and routers over a fresh expert pool."""
    d = config.d_model
    return FlameBlock(
        nn.ModuleDict({m: nn.LayerNorm(d) for m in modalities}),
        nn.ModuleDict({m: SelfAttention(d, config.n_heads) for m in modalities}),
        nn.ModuleDict({m: nn.LayerNorm(d) for m in modalities}),
        nn.ModuleDict(
            {m: Router(d, config.n_experts, config.top_k, config.gating, config.noise) for m in modalities}
        ),
        MoELayer(d, config.n_experts, config.expert_hidden, config.conv_kernel, config.dropout),
        config.dropout,
    )
