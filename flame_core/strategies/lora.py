"""LoRA per stage: rank-r adapters (B zero, A random) on the frozen model's matrices, selected by the
task's cursor; new router heads and task heads as in FLAME, but no truncation step."""

from __future__ import annotations

from torch import nn

from flame_core.model import Flame
from flame_core.strategies.flame import FlameStrategy


class LoraStrategy(FlameStrategy):
    """Options: rank (adapter rank, default 32)."""

    name = "lora"

    def wrap(self, model: Flame) -> nn.Module:
        module = super().wrap(model)
        self.cl.adapter_rank = int(self.options.get("rank", 32))
        return module

    def compress(self, train_batch, tasks):  # type: ignore[no-untyped-def]
        return None  # adapters are trained at their rank; nothing to truncate

    def end_stage(self, train_batch, tasks):  # type: ignore[no-untyped-def]
        stage = self.cl.end_stage(rank=0)
        return {
            "new_modules": self._stage_extra,
            "ranks": stage.ranks,
            "mean_rank": float(self.cl.adapter_rank or 0),
        }
