"""Routed-input statistics: the second moment E[x x^T] of the inputs each weight actually sees.

Expert weights see only the tokens their router dispatched to them, which is what makes FLAME's
truncation and the spectral analysis data-aware. Conv inputs are the sliding windows, reordered to
match `components.as_matrix` of the `(out, in, k)` kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flame_core.batch import Batch
from flame_core.experts import Expert


class MomentAccumulator:
    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        if x.shape[0] == 0:
            return
        gram = x.T @ x
        self.sums[name] = self.sums[name] + gram if name in self.sums else gram
        self.counts[name] = self.counts.get(name, 0) + x.shape[0]

    def moments(self) -> dict[str, torch.Tensor]:
        return {n: (s / self.counts[n]).float() for n, s in self.sums.items()}

    def counts_by_name(self) -> dict[str, int]:
        return dict(self.counts)


def _window_perm(d: int, kernel: int, device: torch.device) -> torch.Tensor:
    """Time-major window index (j * d + c) for each in-major matrix column (c * k + j)."""
    return torch.tensor([j * d + c for c in range(d) for j in range(kernel)], device=device)


@torch.no_grad()
def routed_second_moments(
    model: nn.Module, flame: nn.Module, batch: Batch, tasks: Sequence[str], chunk: int = 256
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Run `model(batch, tasks)` in eval mode and return, per weight name of `flame` (the `Flame` whose
    parameters are named, possibly wrapped by `model`), the second moment of its inputs and the
    number of input rows seen. Covers every `nn.Linear` and every expert's conv/fc1/fc2."""
    acc = MomentAccumulator()
    handles = []
    for mod_name, module in flame.named_modules():
        if isinstance(module, nn.Linear):
            handles.append(
                module.register_forward_pre_hook(lambda _m, args, n=f"{mod_name}.weight": acc.add(n, args[0]))
            )
        elif isinstance(module, Expert):
            d, k = module.norm.normalized_shape[0], module.kernel

            def observe(win, h, u, n=mod_name, d=d, k=k):  # type: ignore[no-untyped-def]
                acc.add(f"{n}.conv.weight", win.index_select(1, _window_perm(d, k, win.device)))
                acc.add(f"{n}.fc1.weight", h)
                acc.add(f"{n}.fc2.weight", u)

            module.observe = observe
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, batch.size, chunk):
            idx = torch.arange(start, min(start + chunk, batch.size))
            model(batch.select(idx).to(device), list(tasks))
    finally:
        for h in handles:
            h.remove()
        for module in flame.modules():
            if isinstance(module, Expert):
                module.observe = None
        model.train(was_training)
    return acc.moments(), acc.counts_by_name()
