"""FLAME continual learning: stacked low-rank stages on frozen experts, with a cursor per task.

Stage 0 is the multitask-pretrained `Flame`. Each later stage t trains, on the frozen model:
- a zero-initialised full-shape delta for every "stacked" parameter that existed before t (experts,
  attention, norms and encoders of modalities seen before; not `nn.Embedding` lookup tables, which a
  low-rank delta would store at vocabulary size); matrices are then truncated to rank r
  (`compress`), and the rank-r factors may be refit with the stage's heads before freezing;
- fresh router heads for every modality of the stage (initialised from the previous heads);
- heads of the stage's new tasks and every module of its new modalities (trained directly).
A task introduced at stage c runs with `W_0 + sum_{s<=c} B_s A_s`, stage c's router heads and its
own head. Later stages add modules and deltas the cursor-c forward pass never reads, and effective
weights are computed by elementwise float64 sums in a fixed order, so cursor c's outputs stay
bit-identical (`torch.equal`) whatever happens later, and after a save/load round trip.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from flame_core.batch import Batch
from flame_core.components import LowRank, choose_rank, truncate
from flame_core.config import FlameConfig
from flame_core.experts import Expert
from flame_core.model import Flame, FlameOutput, merge_outputs
from flame_core.naming import kind_of, param_key, param_name, router_place
from flame_core.routing import Router
from flame_core.specs import SpecSet
from flame_core.stages import CapacityExceeded, Stage, check_budget, group_by_cursor, materialise

__all__ = ["CapacityExceeded", "ContinualFlame", "Stage", "StageDelta", "full_delta", "kind_of"]

# A stage's trainable delta for one stacked parameter (name, base tensor): a full tensor, factors
# (B, A) whose product is added, or None for no delta.
StageDelta = Callable[[str, nn.Parameter], "nn.Parameter | tuple[nn.Parameter, nn.Parameter] | None"]


def full_delta(name: str, p: nn.Parameter) -> nn.Parameter:
    """FLAME's stage delta: zero-initialised at full shape, truncated to rank r by `compress`."""
    return nn.Parameter(torch.zeros_like(p))


class ContinualFlame(nn.Module):
    """A `Flame` model plus its stages and task cursors. `forward(batch, tasks)` runs each task at its
    cursor; during a stage (between `begin_stage` and `end_stage`) the stage's tasks run live."""

    def __init__(self, model: Flame, rank_budget: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.rank_budget = rank_budget
        self.live_a = nn.ParameterDict()
        self.live_b = nn.ParameterDict()
        self.cursor: dict[str, int] = {t: 0 for t in model.specs.tasks}
        self.birth: dict[str, int] = {n: 0 for n, _ in model.named_parameters()}
        self.stages: list[Stage] = [Stage(0, list(model.specs.tasks), list(model.specs.modalities), [])]
        self.training_ranges: dict[str, dict] = {}  # task -> its inputs' ranges (`flame_core.ranges`)
        # task -> temperature and conformal quantiles (`flame_core.calibration`), and the statistics of
        # its routers' pooled summaries (`flame_core.shift`); fixed when the task's stage ends
        self.calibration: dict[str, dict] = {}
        self.shift: dict[str, dict] = {}
        self.live_deltas = nn.ParameterDict()
        self.live_routers = nn.ParameterDict()
        self._live: Stage | None = None
        self._cache: dict[int, dict[str, torch.Tensor]] = {}
        self._models: dict[int, Flame] = {}  # plain dict: copies stay out of state_dict()
        for p in model.parameters():
            p.requires_grad_(False)

    @property
    def specs(self) -> SpecSet:
        return self.model.specs

    @property
    def config(self) -> FlameConfig:
        return self.model.config

    @property
    def open_stage(self) -> Stage | None:
        """The stage between `begin_stage` and `end_stage`, or None when none is open."""
        return self._live

    @property
    def current_stage(self) -> int:
        return len(self.stages) - 1 if self._live is None else self._live.index

    # ---- stage lifecycle -------------------------------------------------------------------------
    def begin_stage(self, specs: SpecSet, delta: StageDelta = full_delta) -> list[nn.Parameter]:
        """Open stage t for the new tasks in `specs`; returns exactly the parameters to optimise. `delta`
        makes each stacked parameter's trainable delta (the `lora` strategy passes its adapters)."""
        if self._live is not None:
            raise RuntimeError(f"stage {self._live.index} is still open; call end_stage first")
        t = len(self.stages)
        before = dict(self.model.named_parameters())
        new_mods, new_tasks = self.model.extend(specs)
        if not new_tasks:
            raise ValueError("a continual stage needs at least one new task")
        mods = [
            m for m in self.specs.modalities if any(m in self.specs.tasks[x].modalities for x in new_tasks)
        ]
        self._live = Stage(t, new_tasks, mods, new_mods)
        lookups = {f"{n}.weight" for n, mod in self.model.named_modules() if isinstance(mod, nn.Embedding)}
        for name, p in self.model.named_parameters():
            if name in lookups and name in before:
                continue  # lookup tables are not linear layers: no delta (as in the reference code)
            if name not in before:
                self.birth[name] = t
                p.requires_grad_(True)
            elif kind_of(name) == "stacked":
                made = delta(name, p)
                if isinstance(made, tuple):
                    self.live_b[param_key(name)], self.live_a[param_key(name)] = made
                elif made is not None:
                    self.live_deltas[param_key(name)] = made
        prev = self.parameters_at(t - 1)
        for m in mods:
            if m in new_mods:
                continue  # the module's own router, created just now, is this stage's head
            for name, p in self.model.named_parameters():
                if kind_of(name) == "router" and router_place(name)[1] == m:
                    self.live_routers[param_key(name)] = nn.Parameter(prev.get(name, p).detach().clone())
        for x in new_tasks:
            self.cursor[x] = t
        return self.stage_parameters()

    def stage_parameters(self) -> list[nn.Parameter]:
        """Everything the open stage may train: its new modules, live deltas (full or factored) and
        router heads. Nothing older is ever in this list."""
        if self._live is None:
            raise RuntimeError("no stage is open")
        live = (self.live_deltas, self.live_b, self.live_a, self.live_routers)
        return self.new_parameters() + [p for d in live for p in d.values()]

    def new_parameters(self) -> list[nn.Parameter]:
        """The open stage's new modules: heads of its new tasks, every module of its new modalities."""
        if self._live is None:
            raise RuntimeError("no stage is open")
        return [p for n, p in self.model.named_parameters() if self.birth[n] == self._live.index]

    def compress(
        self,
        rank: int | str = "auto",
        energy: float = 0.99,
        second_moments: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, int]:
        """Truncate the open stage's full matrix deltas to live rank-r factors `B A` (data-aware when
        `second_moments` has the weight's routed-input second moment) and check the rank budget. The
        factors stay trainable, so the stage can refit them (with its heads and routers) to the loss
        before `end_stage` freezes them; the stored rank never grows. Returns the chosen ranks."""
        if self._live is None:
            raise RuntimeError("no stage is open")
        moments, factored = second_moments or {}, {}
        for key, p in self.live_deltas.items():
            if p.dim() < 2:
                continue  # vectors keep full deltas
            name = param_name(key)
            c = moments.get(name)
            r = choose_rank(p.detach(), rank, energy, c)
            factored[key] = truncate(p.detach(), r, c) if r > 0 else None
        check_budget(
            self._live.index,
            self.rank_budget,
            self.reserved_rank(),
            {param_name(k): lr.rank for k, lr in factored.items() if lr is not None}
            | {param_name(k): b.shape[1] for k, b in self.live_b.items()},
        )
        for key, lr in factored.items():
            del self.live_deltas[key]
            if lr is not None:
                self.live_b[key] = nn.Parameter(lr.b.clone())
                self.live_a[key] = nn.Parameter(lr.a.clone())
        return {param_name(k): b.shape[1] for k, b in self.live_b.items()}

    def end_stage(
        self,
        rank: int | str = "auto",
        energy: float = 0.99,
        second_moments: dict[str, torch.Tensor] | None = None,
    ) -> Stage:
        """Compress the stage's remaining full matrix deltas (see `compress`; a no-op after it), then
        freeze everything the stage trained and record it as a finished stage."""
        if self._live is None:
            raise RuntimeError("no stage is open")
        self.compress(rank, energy, second_moments)
        stage = self._live
        deltas: dict[str, LowRank | torch.Tensor] = {}
        for key, p in self.live_deltas.items():  # vectors only, after compress
            if torch.count_nonzero(p):
                deltas[param_name(key)] = p.detach().clone()
        shapes = {param_key(n): tuple(p.shape) for n, p in self.model.named_parameters()}
        for key, b in self.live_b.items():
            a = self.live_a[key]
            deltas[param_name(key)] = LowRank(b.detach().clone(), a.detach().clone(), shapes[key])
        stage.deltas = deltas
        stage.routers = {param_name(k): p.detach().clone() for k, p in self.live_routers.items()}
        for name, p in self.model.named_parameters():
            if self.birth[name] == stage.index:
                p.requires_grad_(False)
        self.live_deltas = nn.ParameterDict()
        self.live_routers = nn.ParameterDict()
        self.live_a, self.live_b = nn.ParameterDict(), nn.ParameterDict()
        self.stages.append(stage)
        self._live = None
        return stage

    def reserved_rank(self) -> dict[str, int]:
        """Cumulative rank reserved per matrix weight over all finished stages."""
        total: dict[str, int] = {}
        for s in self.stages:
            for n, r in s.ranks.items():
                total[n] = total.get(n, 0) + r
        return total

    # ---- cursor forward ----------------------------------------------------------------------------
    def parameters_at(self, c: int) -> dict[str, torch.Tensor]:
        """Parameter overrides (effective weights by name) for cursor c: cached for finished stages,
        live tensors for the open one; {} for cursor 0, whose weights are the model's own."""
        if self._live is not None and c == self._live.index:
            prev, own = self.parameters_at(c - 1), dict(self.model.named_parameters())
            out = {}
            for key, d in self.live_deltas.items():
                name = param_name(key)
                out[name] = prev.get(name, own[name]).detach() + d
            for key, b in self.live_b.items():
                name = param_name(key)
                base = prev.get(name, own[name]).detach()
                out[name] = base + (b @ self.live_a[key]).reshape(base.shape)
            out.update({param_name(k): p for k, p in self.live_routers.items()})
            return out
        if c not in self._cache:
            self._cache[c] = self._materialise(c)
        return self._cache[c]

    def _materialise(self, c: int) -> dict[str, torch.Tensor]:
        if c == 0:
            return {}
        out = {}
        for name, p in self.model.named_parameters():
            if kind_of(name) != "stacked" or self.birth[name] >= c:
                continue
            chain = [s.deltas[name] for s in self.stages[self.birth[name] + 1 : c + 1] if name in s.deltas]
            if chain:
                out[name] = materialise(p, chain)
        out.update(self.stages[c].routers)
        return out

    def clear_cache(self) -> None:
        self._cache.clear()
        self._models.clear()

    def cursor_model(self, c: int) -> Flame:
        """A frozen `Flame` holding cursor c's effective weights, built once and cached: serving a task
        costs one plain forward pass however many stages exist (no per-call weight swapping)."""
        if self._live is not None and c >= self._live.index:
            raise ValueError(f"cursor {c} is the open stage; it has no frozen weights yet")
        if c not in self._models:
            model = copy.deepcopy(self.model)
            for module in model.modules():  # statistics hooks on self.model must not travel along
                module._forward_pre_hooks.clear()
                module._forward_hooks.clear()
                if isinstance(module, Expert):
                    module.observe = None
                if isinstance(module, Router):
                    module.logit_bias = None
            own = dict(model.named_parameters())
            with torch.no_grad():
                for name, t in self.parameters_at(c).items():
                    own[name].copy_(t)
            for p in model.parameters():
                p.requires_grad_(False)
            self._models[c] = model
        return self._models[c]

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Moves and casts (`.to`, `.cuda`) reach the frozen stage tensors too; caches are rebuilt."""
        super()._apply(fn, recurse)
        for s in self.stages:
            s.deltas = {
                n: LowRank(fn(d.b), fn(d.a), d.shape) if isinstance(d, LowRank) else fn(d)
                for n, d in s.deltas.items()
            }
            s.routers = {n: fn(r) for n, r in s.routers.items()}
        self.clear_cache()
        return self

    def forward(self, batch: Batch, tasks: Sequence[str] | None = None) -> FlameOutput:
        """Each task at its own cursor; tasks sharing a cursor share one pass. Aux losses are summed and
        routing is merged (the last cursor's routing wins for a modality several cursors use)."""
        outs = []
        for c, group in group_by_cursor(self.cursor, list(self.specs.tasks) if tasks is None else tasks):
            if self._live is not None and c == self._live.index:
                outs.append(functional_call(self.model, self.parameters_at(c), (batch, group), strict=False))
            else:
                model = self.cursor_model(c)
                model.train(self.training)
                outs.append(model(batch, group))
        return merge_outputs(outs)
