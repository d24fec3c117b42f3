"""Expert expansion (Lifelong-MoE style): each stage adds fresh experts to every block's pool and new
router heads with rows for them; everything from earlier stages is frozen.

A task introduced at stage c (its cursor) routes with stage c's router heads over the experts that
existed at stage c. Later stages only add experts, heads and modules that this forward pass never
reads, so earlier tasks' outputs stay bit-identical. (Lifelong-MoE also distils the old model into
the new one; a cursor per task makes that unnecessary here, and it is left out.)

The forward pass reuses `Flame.forward` and `FlameBlock.forward` unchanged, on a *view*: a `Flame`
that shares the base model's encoders, attention, norms and heads, but whose blocks hold the cursor's
router heads and an expert pool over the cursor's experts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from flame_core.batch import Batch
from flame_core.experts import Expert, MoELayer
from flame_core.model import Flame, FlameBlock, FlameOutput, merge_outputs
from flame_core.routing import Router
from flame_core.specs import SpecSet
from flame_core.stages import group_by_cursor
from flame_core.strategies.base import FlameWrapper, Strategy, numel


def _block_view(block: FlameBlock, routers: dict[str, Router], experts: Sequence[Expert]) -> FlameBlock:
    """`block` with other router heads and expert pool; attention and norms are the block's own."""
    pool = MoELayer(0, 0, 0, block.moe.kernel, 0.0)  # an empty pool, then the shared experts
    pool.experts.extend(experts)
    return block.with_pool(routers, pool)


class ExpandFlame(FlameWrapper):
    """A frozen stage-0 `Flame` plus the experts and router heads later stages added, and task cursors.

    `added[b]` holds block b's added experts in stage order; `router_heads[str(s)][b][m]` is stage s's router
    head for modality m in block b (s >= 1; stage 0 uses the base model's routers)."""

    def __init__(self, model: Flame) -> None:
        super().__init__()
        self.model = model
        self.added = nn.ModuleList(nn.ModuleList() for _ in model.blocks)
        self.router_heads = nn.ModuleDict()
        self.pool_size: list[int] = [model.config.n_experts]  # experts per block at each stage
        self.cursor: dict[str, int] = {t: 0 for t in model.specs.tasks}
        self.open_params: list[nn.Parameter] | None = None
        for p in model.parameters():
            p.requires_grad_(False)

    @property
    def current_stage(self) -> int:
        return len(self.pool_size) - 1

    # ---- stage lifecycle -------------------------------------------------------------------------
    def begin_stage(self, specs: SpecSet, n_new: int) -> list[nn.Parameter]:
        """Open the next stage for the new tasks in `specs`; returns exactly the parameters to optimise:
        `n_new` fresh experts per block, a router head per modality of the new tasks (old rows copied
        from the modality's latest head, new rows random), new task heads and new modalities' modules."""
        if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 1:
            raise ValueError(f"expand option n_new must be an int >= 1, got n_new={n_new!r}")
        if self.open_params is not None:
            raise RuntimeError(f"stage {self.current_stage} is still open; call end_stage first")
        before = {id(p) for p in self.model.parameters()}
        new_mods, new_tasks = self.model.extend(specs)
        if not new_tasks:
            raise ValueError("a continual stage needs at least one new task")
        for block in self._blocks():
            for m in new_mods:
                del block.routers[m]  # the base pool's router is never used: the stage head replaces it
        t, cfg = len(self.pool_size), self.config
        size = self.pool_size[-1] + n_new
        device = next(self.model.parameters()).device
        trainable = [p for p in self.model.parameters() if id(p) not in before]
        used = {m for x in new_tasks for m in self.specs.tasks[x].modalities}
        mods = [m for m in self.specs.modalities if m in used]
        stage_heads = nn.ModuleList()
        for b in range(len(self._blocks())):
            fresh = [
                Expert(cfg.d_model, cfg.expert_hidden, cfg.conv_kernel, cfg.dropout).to(device)
                for _ in range(n_new)
            ]
            cast(nn.ModuleList, self.added[b]).extend(fresh)
            heads = nn.ModuleDict()
            for m in mods:
                head = Router(cfg.d_model, size, cfg.top_k, cfg.gating, cfg.noise).to(device)
                prev = self._router(t - 1, b, m)
                if prev is not None:
                    with torch.no_grad():
                        head.w_gate[: prev.n_experts].copy_(prev.w_gate)
                        head.w_noise[: prev.n_experts].copy_(prev.w_noise)
                        head.pool.query.copy_(prev.pool.query)
                heads[m] = head
            stage_heads.append(heads)
            trainable += [p for e in fresh for p in e.parameters()] + list(heads.parameters())
        self.router_heads[str(t)] = stage_heads
        self.pool_size.append(size)
        for x in new_tasks:
            self.cursor[x] = t
        for p in trainable:
            p.requires_grad_(True)
        self.open_params = trainable
        return trainable

    def end_stage(self) -> list[nn.Parameter]:
        """Freeze what the open stage trained; returns those parameters."""
        if self.open_params is None:
            raise RuntimeError("no stage is open")
        params, self.open_params = self.open_params, None
        for p in params:
            p.requires_grad_(False)
        return params

    # ---- cursor forward ----------------------------------------------------------------------------
    def _blocks(self) -> list[FlameBlock]:
        return [b for b in self.model.blocks if isinstance(b, FlameBlock)]

    def _router(self, c: int, b: int, m: str) -> Router | None:
        """Modality m's router head for cursor c in block b: the latest one from a stage <= c."""
        for s in range(c, 0, -1):
            heads = cast(nn.ModuleDict, cast(nn.ModuleList, self.router_heads[str(s)])[b])
            if m in heads:
                return cast(Router, heads[m])
        base = self._blocks()[b].routers
        if m not in base:
            return None  # born at a later stage: its heads are stage heads
        return cast(Router, base[m])

    def view(self, c: int) -> Flame:
        """A `Flame` running cursor c: the base model's modules, stage c's router heads and the first
        `pool_size[c]` experts of each block."""
        if not 0 <= c < len(self.pool_size):
            raise ValueError(f"cursor {c} out of range: stages 0..{len(self.pool_size) - 1}")
        blocks = nn.ModuleList()
        for b, block in enumerate(self._blocks()):
            routers = {m: r for m in self.specs.modalities if (r := self._router(c, b, m)) is not None}
            experts = [e for e in (*block.moe.experts, *self.added[b].children()) if isinstance(e, Expert)]
            blocks.append(_block_view(block, routers, experts[: self.pool_size[c]]))
        flame = Flame(self.model.config, self.model.specs, self.model.encoders, blocks, self.model.heads)
        flame.training = self.training  # this flag only: the shared parts keep their own
        return flame

    def forward(self, batch: Batch, tasks: Sequence[str] | None = None) -> FlameOutput:
        """Each task at its own cursor; tasks sharing a cursor share one pass."""
        names = list(self.specs.tasks) if tasks is None else tasks
        return merge_outputs([self.view(c)(batch, group) for c, group in group_by_cursor(self.cursor, names)])


@dataclass
class ExpandOptions:
    """n_new: experts added to each block's pool per stage."""

    n_new: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.n_new, bool) or not isinstance(self.n_new, int) or self.n_new < 1:
            raise ValueError(f"expand option n_new must be an int >= 1, got n_new={self.n_new!r}")


class ExpandStrategy(Strategy[ExpandOptions]):
    """Fresh experts and router heads per stage (see `ExpandOptions`)."""

    name = "expand"
    options_type = ExpandOptions

    def __init__(self, options: ExpandOptions | None = None, /, **values: Any) -> None:
        super().__init__(options, **values)
        self.n_new = self.options.n_new
        self._stage_numel = 0

    def wrap(self, model: Flame) -> nn.Module:
        self.ex = ExpandFlame(model)
        self.module = self.ex
        return self.ex

    def begin_stage(self, specs: SpecSet) -> list[nn.Parameter]:
        params = self.ex.begin_stage(specs, self.n_new)
        self._stage_numel = numel(params)
        return params

    def end_stage(self, train_batch: Batch, tasks: Sequence[str]) -> dict[str, Any]:
        self.ex.end_stage()
        return {"experts_per_block": self.ex.pool_size[-1]}

    def stage_parameters(self) -> int:
        return self._stage_numel

    def serving_parameters(self) -> int:
        return numel(self.ex.parameters())
