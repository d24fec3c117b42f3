"""Temporal experts and the sparse MoE layer that dispatches whole sequences to them.

Weights stay in plain `nn.Conv1d` / `nn.LayerNorm` / `nn.Linear` modules named `conv`, `norm`, `fc1`,
`fc2`, but the forward pass reads them through `Expert.weights()` (or an explicit mapping), so a later
stage can substitute effective weights (base + stacked low-rank deltas) without touching this code.
The conv runs as one matmul over sliding windows: after the windows are cut, an expert is a per-token
function, which lets the MoE layer pack the tokens of every modality routed to an expert together.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ExpertWeights = Mapping[str, torch.Tensor]


def conv_windows(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """(N, L, d) -> (N, L, k * d) sliding windows of a 'same'-padded conv1d (steps past either end read
    as zeros), time-major: `[n, t, j * d + c] = x[n, t + j - left, c]`. Pair with `conv_matrix`."""
    left = (kernel - 1) // 2
    xp = F.pad(x, (0, 0, left, kernel - 1 - left))  # (N, L + k - 1, d)
    return xp.unfold(1, kernel, 1).transpose(-1, -2).reshape(*x.shape[:2], -1)


def conv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Conv1d weight (out, in, k) -> (out, k * in) matrix for time-major windows:
    `windows @ conv_matrix(w).T + b` equals `F.conv1d(x, w, b, padding="same")` over time."""
    return weight.permute(0, 2, 1).reshape(weight.shape[0], -1)


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On CPU the keep mask comes from 16-bit slices of 48-bit random integers, about
    ten times cheaper than `bernoulli_`, the largest single cost of a CPU training step otherwise.
    Uses torch's global generator, so `torch.manual_seed` still makes it reproducible."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    bits = torch.randint(0, 2**48, (-(-n // 3),), dtype=torch.int64)  # 3 uniform int16 words each
    low = slice(0, 3) if sys.byteorder == "little" else slice(1, 4)  # the three low 16-bit words
    words = bits.view(torch.int16).view(-1, 4)[:, low].reshape(-1)[:n]
    threshold = round(p * 65536) - 32768
    keep = words.view(x.shape) >= threshold
    scale = 65536 / (65536 - round(p * 65536))
    return x * (keep.to(x.dtype) * scale)


class Expert(nn.Module):
    """h = LN(x + GELU(conv1d_k(x))); out = fc2(dropout(GELU(fc1(h)))). Length-preserving; shapes depend
    only on d (and the hidden width), never on the sequence or the modality."""

    def __init__(self, d_model: int, hidden: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel)
        self.norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.kernel, self.dropout = kernel, dropout
        # Optional callback (windows, h, u) -> None: the inputs of conv, fc1 and fc2, for the
        # routed-input statistics of continual learning and the spectral analysis.
        self.observe: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None

    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors the forward pass uses, by parameter name (`conv.weight`, `fc1.bias`, ...)."""
        return dict(self.named_parameters())

    def tokens(self, windows: torch.Tensor, weights: ExpertWeights | None = None) -> torch.Tensor:
        """Per-token form: time-major conv windows (N, k * d) -> (N, d); the residual input is the
        window's centre step."""
        w = self.weights() if weights is None else weights
        left = (self.kernel - 1) // 2
        d = windows.shape[-1] // self.kernel
        x = windows[:, left * d : (left + 1) * d]  # (N, d)
        c = F.linear(windows, conv_matrix(w["conv.weight"]), w["conv.bias"])  # (N, d)
        h = F.layer_norm(x + F.gelu(c), (d,), w["norm.weight"], w["norm.bias"], self.norm.eps)
        u = fast_dropout(F.gelu(F.linear(h, w["fc1.weight"], w["fc1.bias"])), self.dropout, self.training)
        if self.observe is not None:
            self.observe(windows, h, u)
        return F.linear(u, w["fc2.weight"], w["fc2.bias"])  # (N, d)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, weights: ExpertWeights | None = None
    ) -> torch.Tensor:
        """x: (N, L, d), mask: (N, L) bool -> (N, L, d). Padded steps are zeroed before the conv, so they
        read as the conv's own zero padding and never leak into valid steps."""
        x = x * mask.unsqueeze(-1).to(x.dtype)
        win = conv_windows(x, self.kernel)  # (N, L, k * d)
        return self.tokens(win.flatten(0, 1), weights).view_as(x)


class MoELayer(nn.Module):
    """A pool of E experts shared by every modality of one block. Each sample-modality sequence goes to
    its k experts, mixed with the router's gates (one gate per sequence, broadcast over time)."""

    def __init__(self, d_model: int, n_experts: int, hidden: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Expert(d_model, hidden, kernel, dropout) for _ in range(n_experts))
        self.kernel = kernel
        # > 1: each expert's rows are padded to a multiple of this, so the matmul kernels a row goes
        # through do not depend on how many tokens the batch routed to its expert (batch-invariant
        # serving, `flame_core.invariance`). Inference only: padded rows would reach `Expert.observe`.
        self.row_multiple = 1

    def forward(
        self, xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], gates: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Lists over modalities: x (B, L_m, d), mask (B, L_m), gates (B, E) -> outputs (B, L_m, d), zero
        on padded steps.

        Sparse dispatch on valid tokens only: every modality is zero-padded for the conv and flattened
        into one table of rows; each (token, expert) pair gathers its k-row window from that table in
        one `index_select`, each expert runs once on its pairs, and one `index_add` mixes the results
        with the gates (one gate per sequence, broadcast over time)."""
        n_exp, k = len(self.experts), self.kernel
        left = (k - 1) // 2
        rows, starts, targets, tok_gates = [], [], [], []
        row_base = out_base = 0
        for x, mask, gate in zip(xs, masks, gates, strict=True):
            bsz, steps, d = x.shape
            if gate.shape != (bsz, n_exp):
                raise ValueError(f"gates shape {tuple(gate.shape)} != (B={bsz}, E={n_exp})")
            xp = F.pad(x * mask.unsqueeze(-1).to(x.dtype), (0, 0, left, k - 1 - left))  # (B, L + k - 1, d)
            rows.append(xp.reshape(-1, d))
            pos = mask.reshape(-1).nonzero(as_tuple=True)[0]  # (n_m,) valid tokens, b * L + t
            b = pos // steps
            starts.append(row_base + pos + b * (k - 1))  # first window row: b * (L + k - 1) + t
            targets.append(out_base + pos)
            tok_gates.append(gate.index_select(0, b))  # (n_m, E)
            row_base += xp.shape[0] * xp.shape[1]
            out_base += bsz * steps
        table = torch.cat(rows)  # (R, d)
        gate_all, start_all, target_all = torch.cat(tok_gates), torch.cat(starts), torch.cat(targets)
        tok, exp = (gate_all > 0).nonzero(as_tuple=True)  # (n,), (n,): one row per (token, expert) pair
        order = exp.argsort(stable=True)
        tok, exp = tok[order], exp[order]
        offsets = torch.arange(k, device=table.device)
        window_rows = (start_all[tok].unsqueeze(1) + offsets).reshape(-1)  # (n * k,)
        windows = table.index_select(0, window_rows).view(tok.shape[0], -1)  # (n, k * d)
        counts = torch.bincount(exp, minlength=n_exp).tolist()
        experts: list[Expert] = list(self.experts)  # type: ignore[arg-type]
        parts = zip(experts, windows.split(counts), counts, strict=True)
        outs = [self._rows(expert, win) for expert, win, n in parts if n]
        mixed = table.new_zeros(out_base, table.shape[1])  # (sum B * L_m, d)
        if outs:
            y = torch.cat(outs) * gate_all[tok, exp].unsqueeze(-1)  # (n, d)
            mixed = mixed.index_add(0, target_all[tok], y)
        sizes = [x.shape[0] * x.shape[1] for x in xs]
        return [part.view_as(x) for part, x in zip(mixed.split(sizes), xs, strict=True)]

    def _rows(self, expert: Expert, windows: torch.Tensor) -> torch.Tensor:
        extra = -windows.shape[0] % self.row_multiple
        if extra == 0:
            return expert.tokens(windows)
        return expert.tokens(F.pad(windows, (0, 0, 0, extra)))[: windows.shape[0]]
