"""One encoder per modality kind: a `ModalityBatch` becomes tokens `(B, L, d)` plus a valid mask `(B, L)`.

Contract shared by every encoder: the mask is False for padding and for absent samples
(`present[b] = False`), and tokens there are exactly zero, so absent samples never produce NaN and
padding never leaks into valid tokens downstream (attention, pooling and experts all respect the mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flame_core.batch import ModalityBatch
from flame_core.config import FlameConfig
from flame_core.specs import ModalitySpec

Tokens = tuple[torch.Tensor, torch.Tensor]  # (B, L, d) float, (B, L) bool


def _finish(tokens: torch.Tensor, mask: torch.Tensor) -> Tokens:
    return tokens * mask.unsqueeze(-1).to(tokens.dtype), mask


def normalise_times(times: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample min/max scaling of valid times to [0, 1]: robust to any unit (hours, days, years).

    Returns `(t_norm (B, T), span (B,))`; the span (hours between first and last valid step) is kept so
    the encoder can still tell a 2-hour record from a 2-year one.
    """
    big = torch.finfo(times.dtype).max
    t_min = times.masked_fill(~valid, big).amin(dim=1)  # (B,)
    t_max = times.masked_fill(~valid, -big).amax(dim=1)  # (B,)
    has = valid.any(dim=1)
    t_min = torch.where(has, t_min, torch.zeros_like(t_min))
    span = torch.where(has, t_max - t_min, torch.zeros_like(t_min)).clamp_min(0.0)  # (B,)
    t_norm = (times - t_min.unsqueeze(1)) / span.clamp_min(1e-6).unsqueeze(1)
    t_norm = torch.where(valid, t_norm.clamp(0.0, 1.0), torch.zeros_like(t_norm))  # (B, T)
    return t_norm, span


class TimeEmbedding(nn.Module):
    """Learned time embedding (mTAND / Time2Vec): one linear channel plus `dim - 1` periodic ones."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.periodic = nn.Linear(1, max(dim - 1, 1))
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.unsqueeze(-1)  # (..., 1)
        out = torch.cat([self.linear(t), torch.sin(self.periodic(t))], dim=-1)
        return out[..., : self.dim]  # (..., dim)


class TimeSeriesEncoder(nn.Module):
    """Multi-time attention (mTAND): L learned reference times attend over the observed steps of each
    feature, with a learned time embedding for queries and keys (one head, mTAND's default: at 4 heads
    this encoder cost more than the rest of the modality's forward pass).

    Values use a softmax restricted to the steps where that feature is observed; an observation-density
    channel (attention over all valid steps applied to the obs mask) says how much evidence there is.
    A feature never observed gets value 0 and density 0, never NaN.
    """

    def __init__(self, spec: ModalitySpec, config: FlameConfig) -> None:
        super().__init__()
        dt = config.ts_time_dim
        self.ref_times = nn.Parameter(torch.linspace(0.0, 1.0, config.ts_ref_points))  # (L,)
        self.time_emb = TimeEmbedding(dt)
        self.query = nn.Linear(dt, dt)
        self.key = nn.Linear(dt, dt)
        self.out = nn.Linear(2 * spec.dim, config.d_model)
        self.ref_pos = nn.Linear(dt, config.d_model)
        self.span = nn.Linear(1, config.d_model)

    def forward(self, mb: ModalityBatch) -> Tokens:
        values, times = mb.values, mb.times  # (B, T, D), (B, T)
        bsz, steps, _ = values.shape
        valid = (
            mb.pad if mb.pad is not None else torch.ones(bsz, steps, dtype=torch.bool, device=values.device)
        )
        valid = valid & mb.present.unsqueeze(1)  # (B, T)
        obs = mb.obs if mb.obs is not None else torch.ones_like(values, dtype=torch.bool)
        obs_f = (obs & valid.unsqueeze(-1)).to(values.dtype)  # (B, T, D)
        if times is None:
            times = torch.arange(steps, dtype=values.dtype, device=values.device).expand(bsz, steps)
        t_norm, span = normalise_times(times, valid)
        ref = self.time_emb(self.ref_times)  # (L, dt)
        q = self.query(ref)  # (L, dt)
        k = self.key(self.time_emb(t_norm))  # (B, T, dt)
        scores = (k @ (q.t() / math.sqrt(q.shape[-1]))).transpose(1, 2)  # (B, L, T)
        scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
        peak = scores.amax(dim=-1, keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)).detach()
        e = torch.exp(scores - peak)  # (B, L, T), 0 on padding
        both = torch.cat([values * obs_f, obs_f], dim=-1)  # (B, T, 2D)
        num, den = (e @ both).chunk(2, dim=-1)  # (B, L, D) each
        seen = den > 1e-30
        val = torch.where(seen, num / den.clamp_min(1e-30), torch.zeros_like(num))
        density = den / e.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # (B, L, D) in [0, 1]
        span_emb = self.span(torch.log1p(span).unsqueeze(-1)).unsqueeze(1)  # (B, 1, d)
        tokens = self.out(torch.cat([val, density], dim=-1)) + self.ref_pos(ref) + span_emb  # (B, L, d)
        mask = obs_f.sum(dim=(1, 2)).gt(0).unsqueeze(1).expand(-1, ref.shape[0])  # (B, L)
        return _finish(tokens, mask)


class TabularEncoder(nn.Module):
    """Per-feature tokens: value * w_f + b_f (b_f doubles as the feature-id embedding) + missing flag."""

    def __init__(self, spec: ModalitySpec, config: FlameConfig) -> None:
        super().__init__()
        d = config.d_model
        self.weight = nn.Parameter(torch.randn(spec.dim, d) * 0.1)
        self.feature = nn.Parameter(torch.randn(spec.dim, d) * 0.1)
        self.missing = nn.Embedding(2, d)

    def forward(self, mb: ModalityBatch) -> Tokens:
        values = mb.values  # (B, D)
        obs = mb.obs if mb.obs is not None else torch.ones_like(values, dtype=torch.bool)
        vals = torch.where(obs, values, torch.zeros_like(values))
        tokens = vals.unsqueeze(-1) * self.weight + self.feature + self.missing((~obs).long())  # (B, D, d)
        mask = mb.present.unsqueeze(1).expand(-1, values.shape[1])  # (B, D)
        return _finish(tokens, mask)


class TextEncoder(nn.Module):
    """Hashed-token embedding bags: every `text_chunk` consecutive tokens are mean-pooled into one token,
    plus a learned chunk position; the block's self-attention does the mixing. Bigram ids already carry
    local word order, and chunking keeps a 256-token note at 32 tokens, which is what makes text cheap.

    Notes longer than `text_max_tokens` are cut to their first tokens (the tokenizer keeps the start).
    """

    def __init__(self, spec: ModalitySpec, config: FlameConfig) -> None:
        super().__init__()
        self.vocab = config.text_buckets + 1
        self.max_tokens, self.chunk = config.text_max_tokens, config.text_chunk
        self.embed = nn.Embedding(self.vocab, config.d_model, padding_idx=0)
        n_chunks = -(-config.text_max_tokens // config.text_chunk)
        self.pos = nn.Parameter(torch.randn(n_chunks, config.d_model) * 0.02)

    def forward(self, mb: ModalityBatch) -> Tokens:
        ids = mb.values[:, : self.max_tokens].long()  # (B, T)
        if ids.numel() and (int(ids.max()) >= self.vocab or int(ids.min()) < 0):
            raise ValueError(
                f"text token ids must be in [0, {self.vocab - 1}] (text_buckets={self.vocab - 1}), "
                f"got range [{int(ids.min())}, {int(ids.max())}]"
            )
        pad = mb.pad[:, : self.max_tokens] if mb.pad is not None else ids.ne(0)
        valid = pad & mb.present.unsqueeze(1)  # (B, T)
        extra = -ids.shape[1] % self.chunk
        ids, valid = F.pad(ids, (0, extra)), F.pad(valid, (0, extra))
        bsz, n_chunks = ids.shape[0], ids.shape[1] // self.chunk
        keep = valid.view(bsz, n_chunks, self.chunk, 1).to(self.pos.dtype)  # (B, C, c, 1)
        emb = self.embed(ids).view(bsz, n_chunks, self.chunk, -1)  # (B, C, c, d)
        tokens = (emb * keep).sum(2) / keep.sum(2).clamp_min(1.0) + self.pos[:n_chunks]  # (B, C, d)
        return _finish(tokens, keep.squeeze(-1).any(dim=2))


class EmbeddingEncoder(nn.Module):
    """Linear projection of precomputed embeddings, plus a time embedding when times are given."""

    def __init__(self, spec: ModalitySpec, config: FlameConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(spec.dim, config.d_model)
        self.time_emb = TimeEmbedding(config.ts_time_dim)
        self.time_proj = nn.Linear(config.ts_time_dim, config.d_model)

    def forward(self, mb: ModalityBatch) -> Tokens:
        values = mb.values  # (B, T, D)
        if values.dim() == 2:
            values = values.unsqueeze(1)
        bsz, steps, _ = values.shape
        valid = (
            mb.pad if mb.pad is not None else torch.ones(bsz, steps, dtype=torch.bool, device=values.device)
        )
        mask = valid & mb.present.unsqueeze(1)  # (B, T)
        tokens = self.proj(values)  # (B, T, d)
        if mb.times is not None:
            t_norm, _ = normalise_times(mb.times, mask)
            tokens = tokens + self.time_proj(self.time_emb(t_norm))
        return _finish(tokens, mask)


class ImageEncoder(nn.Module):
    """Conv patch embedding (stride = patch) plus learned positions; images are zero-padded to whole
    patches."""

    def __init__(self, spec: ModalitySpec, config: FlameConfig) -> None:
        super().__init__()
        self.side, self.channels, self.patch = spec.dim, spec.channels, config.image_patch
        n_side = -(-spec.dim // config.image_patch)
        self.conv = nn.Conv2d(spec.channels, config.d_model, config.image_patch, stride=config.image_patch)
        self.pos = nn.Parameter(torch.randn(n_side * n_side, config.d_model) * 0.02)

    def forward(self, mb: ModalityBatch) -> Tokens:
        img = mb.values  # (B, C, H, W)
        if img.dim() == 3:
            img = img.unsqueeze(1)
        if tuple(img.shape[1:]) != (self.channels, self.side, self.side):
            raise ValueError(
                f"image batch shape {tuple(img.shape[1:])} != spec (channels, dim, dim) "
                f"{(self.channels, self.side, self.side)}"
            )
        extra = -self.side % self.patch
        img = F.pad(img, (0, extra, 0, extra))
        tokens = self.conv(img).flatten(2).transpose(1, 2) + self.pos  # (B, P, d)
        mask = mb.present.unsqueeze(1).expand(-1, tokens.shape[1])  # (B, P)
        return _finish(tokens, mask)


ENCODERS: dict[str, type[nn.Module]] = {
    "timeseries": TimeSeriesEncoder,
    "tabular": TabularEncoder,
    "text": TextEncoder,
    "embedding": EmbeddingEncoder,
    "image": ImageEncoder,
}


def build_encoder(spec: ModalitySpec, config: FlameConfig) -> nn.Module:
    """The default encoder for `spec.kind`."""
    if spec.kind not in ENCODERS:
        raise ValueError(f"no encoder for kind {spec.kind!r} of modality {spec.name!r}")
    return ENCODERS[spec.kind](spec, config)
