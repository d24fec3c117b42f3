"""Batch invariance: a sample's output bits do not depend on the samples that share its batch.

Three things make a float32 forward pass depend on its batch on CPU, and each is removed here:

- padding length: reductions over time (softmax sums, attention, pooling, the time-series encoder's
  weighted sums) group their additions by the padded length, so every variable-length modality is
  padded to a length fixed by the model (`fixed_lengths`), never to the batch's longest sample;
- kernel choice by row count: a BLAS matmul handles a row count that is not a multiple of its
  register tile (and the single-row case) with other kernels, so a row's result depends on how many
  rows came with it. Batches are padded with absent samples to a multiple of `ROW_MULTIPLE`
  (`pad_rows`), and each expert's share of the sparse dispatch is padded likewise
  (`MoELayer.row_multiple`, set by `make_batch_invariant`);
- everything else is per row (layer norms, gates, heads) or per sample (attention, the experts'
  conv windows), and the MoE adds each token's expert outputs in expert order.

What it costs is measured in `bench/serving.py` (padding every sample to the fixed length).
`tests/flame_core/test_invariance.py` checks the property on random batch compositions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flame_core.batch import Batch, ModalityBatch
from flame_core.config import FlameConfig
from flame_core.experts import MoELayer
from flame_core.specs import SpecSet

ROW_MULTIPLE = 8


def fixed_lengths(specs: SpecSet, config: FlameConfig) -> dict[str, int]:
    """The padded length of every variable-length modality: a spec's `max_len` steps (time series,
    embeddings) or the model's `text_max_tokens` (text). Tabular and image inputs are fixed already."""
    out: dict[str, int] = {}
    for name, spec in specs.modalities.items():
        if spec.kind in ("timeseries", "embedding"):
            out[name] = max(1, spec.max_len)
        elif spec.kind == "text":
            out[name] = config.text_max_tokens
    return out


def make_batch_invariant(model: nn.Module) -> nn.Module:
    """Pad every expert's dispatched rows to `ROW_MULTIPLE` (inference only; returns `model`)."""
    for module in model.modules():
        if isinstance(module, MoELayer):
            module.row_multiple = ROW_MULTIPLE
    return model


def _cat(parts: Sequence[torch.Tensor | None], steps: int | None) -> torch.Tensor | None:
    """Concatenate along rows, padding dim 1 with zeros (False) up to `steps` first."""
    if parts[0] is None:
        return None
    tensors = [p for p in parts if p is not None]
    if steps is not None:
        widths = [(0, 0) * (t.dim() - 2) + (0, steps - t.shape[1]) for t in tensors]
        tensors = [F.pad(t, tuple(w)) if w[-1] else t for t, w in zip(tensors, widths, strict=True)]
    return torch.cat(tensors)


def _steps(mbs: Sequence[ModalityBatch]) -> int | None:
    if mbs[0].kind in ("tabular", "image"):
        return None
    return max(mb.values.shape[1] for mb in mbs)


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """One batch of every row of `batches` (same modalities and tasks), in order. Sequences are padded
    to the longest among them (equal already when collated with fixed lengths)."""
    if len(batches) == 1:
        return batches[0]
    mods: dict[str, ModalityBatch] = {}
    for name, first in batches[0].modalities.items():
        mbs = [b.modalities[name] for b in batches]
        steps = _steps(mbs)
        mods[name] = ModalityBatch(
            first.kind,
            _cat([mb.values for mb in mbs], steps),  # type: ignore[arg-type]
            torch.cat([mb.present for mb in mbs]),
            obs=_cat([mb.obs for mb in mbs], steps),
            times=_cat([mb.times for mb in mbs], steps),
            pad=_cat([mb.pad for mb in mbs], steps),
        )
    return Batch(
        modalities=mods,
        size=sum(b.size for b in batches),
        labels={t: torch.cat([b.labels[t] for b in batches]) for t in batches[0].labels},
        label_mask={t: torch.cat([b.label_mask[t] for b in batches]) for t in batches[0].label_mask},
        ids=[i for b in batches for i in b.ids],
    )


def _zeros_like_rows(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if t is None else t.new_zeros((n, *t.shape[1:]))


def pad_rows(batch: Batch, multiple: int = ROW_MULTIPLE) -> Batch:
    """`batch` with absent samples appended up to a multiple of `multiple` rows; their outputs are
    to be dropped. An absent row has every modality's `present` False and zeros everywhere."""
    extra = -batch.size % multiple
    if extra == 0:
        return batch
    filler = Batch(
        modalities={
            name: ModalityBatch(
                mb.kind,
                mb.values.new_zeros((extra, *mb.values.shape[1:])),
                mb.present.new_zeros(extra),
                obs=_zeros_like_rows(mb.obs, extra),
                times=_zeros_like_rows(mb.times, extra),
                pad=_zeros_like_rows(mb.pad, extra),
            )
            for name, mb in batch.modalities.items()
        },
        size=extra,
        labels={t: v.new_zeros((extra, *v.shape[1:])) for t, v in batch.labels.items()},
        label_mask={t: v.new_zeros(extra) for t, v in batch.label_mask.items()},
        ids=[None] * extra,
    )
    return concat_batches([batch, filler])
