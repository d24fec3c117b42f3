"""Per-modality routers: a masked attention-pooled summary of the sequence picks k experts per sample.

Routing is per sample per modality: one gate vector for the whole sequence, broadcast over time.
Gate parameters have shapes that depend only on d and E, never on sequence length or modality set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

NOISE_EPS = 0.01


class RouterOutput(NamedTuple):
    """gates: (B, E) dense, exactly k non-zeros per present sample summing to 1, zero rows when absent.
    experts/weights: (B, k) chosen experts and their gates. load: (B, E) probability (smooth, with noise)
    or indicator (hard) that each expert is selected, zero rows when absent. present: (B,) bool.
    summary: the attention-pooled summary the gate read (the distribution-shift statistics use it)."""

    gates: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor
    load: torch.Tensor
    present: torch.Tensor
    summary: torch.Tensor | None = None  # (B, d): the pooled summary the gate read


class AttentionPool(nn.Module):
    """Temporal attention pooling with one learned query; padding gets exactly zero weight."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(d_model) / math.sqrt(d_model))
        self.scale = 1.0 / math.sqrt(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (x @ self.query) * self.scale  # (B, L)
        scores = scores.masked_fill(~mask, float("-inf"))
        # Rows without a valid step would be all -inf (NaN softmax): give them zero scores, then zero weight.
        scores = torch.where(mask.any(dim=1, keepdim=True), scores, torch.zeros_like(scores))
        attn = torch.softmax(scores, dim=1) * mask.to(x.dtype)  # (B, L)
        return torch.einsum("bl,bld->bd", attn, x)  # (B, d)


class Router(nn.Module):
    """Pooled summary z -> gating logits (softmax: zW, laplace: -||z - w_e||, gaussian: -||z - w_e||^2)
    -> optional noise (training) -> top-k -> softmax over the kept k."""

    def __init__(self, d_model: int, n_experts: int, top_k: int, gating: str, noise: bool) -> None:
        super().__init__()
        if gating not in ("softmax", "laplace", "gaussian"):
            raise ValueError(f"gating must be softmax, laplace or gaussian, got {gating!r}")
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k ({top_k}) must be in [1, n_experts={n_experts}]")
        self.n_experts, self.top_k, self.gating, self.noise = n_experts, top_k, gating, noise
        self.pool = AttentionPool(d_model)
        # Random init: all-equal weights (zero for softmax, equal centroids for distances) make ties,
        # and top-k would then always pick the first k experts.
        self.w_gate = nn.Parameter(torch.randn(n_experts, d_model) / math.sqrt(d_model))  # (E, d)
        self.w_noise = nn.Parameter(torch.zeros(n_experts, d_model))  # (E, d)
        # Optional callback z (B, d) -> (B, E) added to the clean logits: a strategy's routing calibration
        # (the `pas` baseline's pathway-activation reweighting). None in FLAME itself.
        self.logit_bias: Callable[[torch.Tensor], torch.Tensor] | None = None

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        if self.gating == "softmax":
            return z @ self.w_gate.t()  # (B, E)
        sq = (z.unsqueeze(1) - self.w_gate.unsqueeze(0)).pow(2).sum(-1)  # (B, E)
        if self.gating == "gaussian":
            return -sq
        return -torch.sqrt(sq + 1e-8)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> RouterOutput:
        """x: (B, L, d) normalised tokens, mask: (B, L) valid steps, present: (B,) bool."""
        z = self.pool(x, mask)  # (B, d)
        clean = self.logits(z)  # (B, E)
        if self.logit_bias is not None:
            clean = clean + self.logit_bias(z)
        noisy, std = clean, None
        if self.noise and self.training:
            std = F.softplus(z @ self.w_noise.t()) + NOISE_EPS  # (B, E)
            noisy = clean + torch.randn_like(clean) * std
        k, n_exp = self.top_k, self.n_experts
        top_vals, top_idx = noisy.topk(min(k + 1, n_exp), dim=1)  # (B, k+1)
        weights = torch.softmax(top_vals[:, :k], dim=1)  # (B, k)
        experts = top_idx[:, :k]  # (B, k)
        keep = present.to(weights.dtype).unsqueeze(1)
        weights = weights * keep
        gates = torch.zeros_like(clean).scatter(1, experts, weights)  # (B, E)
        load = self._load(clean, noisy, std, top_vals, experts) * keep
        return RouterOutput(gates, experts, weights, load, present, z)

    def _load(
        self,
        clean: torch.Tensor,
        noisy: torch.Tensor,
        std: torch.Tensor | None,
        top_vals: torch.Tensor,
        experts: torch.Tensor,
    ) -> torch.Tensor:
        """Smooth load (Shazeer et al. 2017): P(expert in top-k under re-drawn noise); else a hard count."""
        chosen = torch.zeros_like(clean).scatter(1, experts, 1.0)  # (B, E)
        if std is None or self.top_k == self.n_experts:
            return chosen
        k = self.top_k
        thr_if_in = top_vals[:, k : k + 1]  # (B, 1): to stay in, beat the (k+1)-th
        thr_if_out = top_vals[:, k - 1 : k]  # (B, 1): to get in, beat the k-th
        thr = torch.where(chosen.bool(), thr_if_in, thr_if_out)  # (B, E)
        return torch.special.ndtr((clean - thr) / std)  # (B, E) standard normal CDF
