"""Training losses: per-task loss, CV^2 router balance, and the cross-modal interaction loss."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F

from flame_core.routing import RouterOutput
from flame_core.specs import HeadSpec, TaskSpec


def task_loss(head: HeadSpec, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean loss over samples with a label (`mask`); 0 (still attached to the graph) when there are none.

    BCE-with-logits for binary (labels 0/1) and multilabel, cross-entropy for multiclass, MSE for
    regression. Unlabelled rows are dropped before the loss, so their label values may be anything."""
    if logits.dim() != 2 or logits.shape[1] != head.out_dim:
        raise ValueError(f"logits shape {tuple(logits.shape)} != (B, {head.out_dim}) for a {head.type} head")
    if mask.shape != (logits.shape[0],) or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels {tuple(labels.shape)} / mask {tuple(mask.shape)} do not match batch {logits.shape[0]}"
        )
    mask = mask.bool()
    if not bool(mask.any()):
        return logits.sum() * 0.0
    x, y = logits[mask], labels[mask]
    if head.type == "binary":
        return F.binary_cross_entropy_with_logits(x[:, 0], y.to(x.dtype))
    if head.type == "multiclass":
        return F.cross_entropy(x, y.long())
    if head.type == "multilabel":
        return F.binary_cross_entropy_with_logits(x, y.to(x.dtype))
    if head.type == "regression":
        return F.mse_loss(x[:, 0], y.to(x.dtype))
    raise ValueError(f"unknown head type {head.type!r}")


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation: 0 when all experts get the same share."""
    if x.numel() < 2:
        return x.sum() * 0.0
    return x.var(unbiased=False) / (x.mean().pow(2) + 1e-10)


def balance_loss(routers: Iterable[RouterOutput], device: torch.device | None = None) -> torch.Tensor:
    """Sum over routers of CV^2(importance) + CV^2(load), counting present samples only (absent samples
    already carry all-zero gates and load)."""
    total: torch.Tensor | None = None
    for r in routers:
        if not bool(r.present.any()):
            continue
        term = cv_squared(r.gates.sum(0)) + cv_squared(r.load.sum(0))
        total = term if total is None else total + term
    return total if total is not None else torch.zeros((), device=device)


def mean_gate(r: RouterOutput) -> torch.Tensor | None:
    """Average routing distribution over present samples, (E,); None when no sample has the modality."""
    n = int(r.present.sum())
    return r.gates.sum(0) / n if n else None


def interaction_loss(
    tasks: Iterable[TaskSpec], routers: Mapping[str, RouterOutput], device: torch.device | None = None
) -> torch.Tensor:
    """Sum over tasks of the mean pairwise cosine similarity between the task's modalities' mean gate
    vectors: +cos for `spread` (modalities use different experts), -cos for `concentrate`. Tasks with a
    single modality (or fewer than two modalities present in the batch) contribute 0."""
    total: torch.Tensor | None = None
    for task in tasks:
        means = [mean_gate(routers[m]) for m in task.modalities if m in routers]
        vecs = [v for v in means if v is not None]
        if len(vecs) < 2:
            continue
        stacked = F.normalize(torch.stack(vecs), dim=1)  # (M, E)
        sim = stacked @ stacked.t()  # (M, M)
        m = len(vecs)
        pairs = sim.triu(diagonal=1).sum() / (m * (m - 1) / 2)
        term = pairs if task.interaction == "spread" else -pairs
        total = term if total is None else total + term
    return total if total is not None else torch.zeros((), device=device)
