"""Task heads: per-modality summaries (a learned vector for absent ones) -> concat -> LN -> Linear."""

from __future__ import annotations

import torch
from torch import nn

from flame_core.specs import HeadSpec


class TaskHead(nn.Module):
    """Concatenates one summary per task modality in the task spec's fixed order, so a sample missing a
    modality still has a well-defined input: that modality's learned "missing" vector."""

    def __init__(self, modalities: tuple[str, ...], d_model: int, out_dim: int) -> None:
        super().__init__()
        self.modalities = modalities
        self.missing = nn.Parameter(torch.randn(len(modalities), d_model) * 0.02)  # (M, d)
        self.norm = nn.LayerNorm(len(modalities) * d_model)
        self.out = nn.Linear(len(modalities) * d_model, out_dim)

    def forward(self, summaries: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """summaries[m]: (B, d); present[m]: (B,) bool -> (B, out_dim) raw logits / values."""
        parts = []
        for i, m in enumerate(self.modalities):
            keep = present[m].unsqueeze(1)  # (B, 1)
            parts.append(torch.where(keep, summaries[m], self.missing[i].expand_as(summaries[m])))
        return self.out(self.norm(torch.cat(parts, dim=1)))  # (B, out_dim)


def predict_outputs(head: HeadSpec, logits: torch.Tensor) -> torch.Tensor:
    """What a caller reads: P(class 1) (binary, (B,)), softmax (multiclass, (B, C)), per-label sigmoid
    (multilabel, (B, C)) or the value (regression, (B,))."""
    if logits.dim() != 2 or logits.shape[1] != head.out_dim:
        raise ValueError(f"logits shape {tuple(logits.shape)} != (B, {head.out_dim}) for a {head.type} head")
    if head.type == "binary":
        return torch.sigmoid(logits[:, 0])
    if head.type == "multiclass":
        return torch.softmax(logits, dim=1)
    if head.type == "multilabel":
        return torch.sigmoid(logits)
    if head.type == "regression":
        return logits[:, 0]
    raise ValueError(f"unknown head type {head.type!r}")
