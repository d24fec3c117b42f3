"""Temporal experts and the sparse MoE layer that dispatches whole sequences to them.

Weights stay in plain `nn.Conv1d` / `nn.LayerNorm` / `nn.Linear` modules named `conv`, `norm`, `fc1`,
`fc2`, but the forward pass reads them through `Expert.weights()` (or an explicit mapping), so a later
stage can substitute effective weights (base + stacked low-rank deltas) without touching this code.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

ExpertWeights = Mapping[str, torch.Tensor]


class Expert(nn.Module):
    """h = LN(x + GELU(conv1d_k(x))); out = fc2(dropout(GELU(fc1(h)))). Length-preserving; shapes depend
    only on d (and the hidden width), never on the sequence or the modality."""

    def __init__(self, d_model: int, hidden: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel)
        self.norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.dropout = dropout

    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors the forward pass uses, by parameter name (`conv.weight`, `fc1.bias`, ...)."""
        return dict(self.named_parameters())

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, weights: ExpertWeights | None = None
    ) -> torch.Tensor:
        """x: (N, L, d), mask: (N, L) bool. Padded steps are zeroed before the conv, so they read as the
        conv's own zero padding and never leak into valid steps."""
        w = self.weights() if weights is None else weights
        x = x * mask.unsqueeze(-1).to(x.dtype)  # (N, L, d)
        c = F.conv1d(x.transpose(1, 2), w["conv.weight"], w["conv.bias"], padding="same")  # (N, d, L)
        h = x + F.gelu(c.transpose(1, 2))  # (N, L, d)
        h = F.layer_norm(h, (h.shape[-1],), w["norm.weight"], w["norm.bias"], self.norm.eps)
        u = F.dropout(F.gelu(F.linear(h, w["fc1.weight"], w["fc1.bias"])), self.dropout, self.training)
        return F.linear(u, w["fc2.weight"], w["fc2.bias"])  # (N, L, d)


class MoELayer(nn.Module):
    """A pool of E experts shared by every modality of one block; each sample-modality sequence goes to its
    k experts and their outputs are mixed with the router's gates (one gate per sequence)."""

    def __init__(self, d_model: int, n_experts: int, hidden: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Expert(d_model, hidden, kernel, dropout) for _ in range(n_experts))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """x: (B, L, d), mask: (B, L), gates: (B, E) -> (B, L, d), zero on padded steps.

        Sparse dispatch: each expert runs only on the samples routed to it (index_select / index_add)."""
        if gates.shape != (x.shape[0], len(self.experts)):
            raise ValueError(f"gates shape {tuple(gates.shape)} != (B={x.shape[0]}, E={len(self.experts)})")
        # Group (sample, expert) pairs by expert: one gather in, one scatter out, contiguous slices per expert.
        sample_idx, expert_idx = (gates > 0).nonzero(as_tuple=True)  # (n,), (n,)
        order = expert_idx.argsort(stable=True)
        sample_idx, expert_idx = sample_idx[order], expert_idx[order]
        counts = torch.bincount(expert_idx, minlength=len(self.experts)).tolist()
        xs, ms = x.index_select(0, sample_idx), mask.index_select(0, sample_idx)  # (n, L, d), (n, L)
        outs = [
            expert(xe, me)
            for expert, xe, me, n in zip(self.experts, xs.split(counts), ms.split(counts), counts, strict=True)
            if n
        ]
        if not outs:
            return torch.zeros_like(x)
        y = torch.cat(outs) * gates[sample_idx, expert_idx][:, None, None]  # (n, L, d)
        out = torch.zeros_like(x).index_add(0, sample_idx, y)  # (B, L, d)
        return out * mask.unsqueeze(-1).to(x.dtype)
