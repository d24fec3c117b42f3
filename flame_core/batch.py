"""Collated tensors handed to the model. Built by `flame_core.collate.collate`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModalityBatch:
    """One modality for B samples. Absent samples have `present[b] = False` and all-zero rows.

    kind        values                    obs (observed)   times    pad (valid steps)
    timeseries  (B, T, D) float, 0=miss   (B, T, D) bool   (B, T)   (B, T) bool
    tabular     (B, D) float, 0=miss      (B, D) bool      None     None
    text        (B, T) long token ids     None             None     (B, T) bool
    embedding   (B, T, D) float           None             (B, T)   (B, T) bool
    image       (B, C, H, W) float        None             None     None
    """

    kind: str
    values: torch.Tensor
    present: torch.Tensor  # (B,) bool
    obs: torch.Tensor | None = None
    times: torch.Tensor | None = None
    pad: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ModalityBatch:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return ModalityBatch(
            kind=self.kind,
            values=self.values.to(device, non_blocking=True),
            present=self.present.to(device, non_blocking=True),
            obs=mv(self.obs),
            times=mv(self.times),
            pad=mv(self.pad),
        )

    def pin_memory(self) -> ModalityBatch:
        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory()

        return ModalityBatch(
            self.kind,
            self.values.pin_memory(),
            self.present.pin_memory(),
            pin(self.obs),
            pin(self.times),
            pin(self.pad),
        )

    def select(self, idx: torch.Tensor) -> ModalityBatch:
        """Rows `idx`, with the time axis trimmed to the longest valid sequence among them."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, idx)

        values, obs, times, pad = pick(self.values), pick(self.obs), pick(self.times), pick(self.pad)
        if pad is not None and pad.shape[1] > 1:
            keep = max(int(pad.any(0).nonzero().max().item()) + 1 if pad.any() else 1, 1)
            values = values[:, :keep]  # type: ignore[index]
            pad = pad[:, :keep]
            obs = None if obs is None else obs[:, :keep]
            times = None if times is None else times[:, :keep]
        return ModalityBatch(self.kind, values, self.present.index_select(0, idx), obs, times, pad)  # type: ignore[arg-type]


@dataclass
class Batch:
    """`labels[task]`: (B,) long for binary/multiclass, (B, C) float for multilabel, (B,) float for
    regression; `label_mask[task]`: (B,) bool, True where the sample has a label for that task."""

    modalities: dict[str, ModalityBatch]
    size: int
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    label_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    ids: list[str | None] = field(default_factory=list)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            modalities={k: v.to(device) for k, v in self.modalities.items()},
            size=self.size,
            labels={k: v.to(device) for k, v in self.labels.items()},
            label_mask={k: v.to(device) for k, v in self.label_mask.items()},
            ids=self.ids,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies, so `.to(cuda)` copies without blocking (CUDA hosts only)."""
        return Batch(
            modalities={k: v.pin_memory() for k, v in self.modalities.items()},
            size=self.size,
            labels={k: v.pin_memory() for k, v in self.labels.items()},
            label_mask={k: v.pin_memory() for k, v in self.label_mask.items()},
            ids=self.ids,
        )

    def select(self, idx: torch.Tensor) -> Batch:
        """A sub-batch of rows `idx` (a 1-D long tensor); lets a split be collated once per run."""
        return Batch(
            modalities={k: v.select(idx) for k, v in self.modalities.items()},
            size=len(idx),
            labels={k: v.index_select(0, idx) for k, v in self.labels.items()},
            label_mask={k: v.index_select(0, idx) for k, v in self.label_mask.items()},
            ids=[self.ids[i] for i in idx.tolist()] if self.ids else [],
        )
