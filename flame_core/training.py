"""Multitask training loop: AdamW, validation-based early stopping, seeds, CPU or CUDA."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from flame_core.batch import Batch
from flame_core.collate import collate
from flame_core.heads import predict_outputs
from flame_core.losses import task_loss
from flame_core.metrics import PRIMARY_METRIC, task_metrics
from flame_core.specs import SpecSet

if TYPE_CHECKING:
    from flame_core.model import Flame


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    patience: int = 5
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience < 0 or self.weight_decay < 0:
            raise ValueError(
                f"patience and weight_decay must be >= 0, got {self.patience}, {self.weight_decay}"
            )


@dataclass
class TrainResult:
    best_epoch: int
    val_metrics: dict[str, dict[str, float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # wall time including validation
    samples_per_s: float = 0.0  # optimisation steps only


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def labelled_tasks(samples: Sequence[dict], specs: SpecSet) -> list[str]:
    """Tasks of `specs` that at least one sample carries a label for."""
    seen: set[str] = set()
    for s in samples:
        if "labels" in s:
            seen.update(k for k, v in s["labels"].items() if v is not None)
        elif s.get("label") is not None and len(specs.tasks) == 1:
            seen.update(specs.tasks)
    return [t for t in specs.tasks if t in seen]


def score(metrics: dict[str, dict[str, float]], specs: SpecSet) -> float:
    """Mean primary metric over tasks, oriented so that higher is better (selection criterion)."""
    vals = []
    for task, m in metrics.items():
        key = PRIMARY_METRIC[specs.tasks[task].head.type]
        v = m.get(key, float("nan"))
        if not math.isnan(v):
            vals.append(-v if key == "mse" else v)
    return float(np.mean(vals)) if vals else float("-inf")


def batch_loss(model: torch.nn.Module, batch: Batch, specs: SpecSet, tasks: Sequence[str]) -> torch.Tensor:
    out = model(batch, tasks)
    loss = out.aux_loss
    for t in tasks:
        loss = loss + task_loss(specs.tasks[t].head, out.outputs[t], batch.labels[t], batch.label_mask[t])
    return loss


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module, batch: Batch, specs: SpecSet, tasks: Sequence[str], batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Head outputs (probabilities/values, see `heads.predict_outputs`) for every row of `batch`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for start in range(0, batch.size, batch_size):
        idx = torch.arange(start, min(start + batch_size, batch.size))
        out = model(batch.select(idx).to(device), tasks)
        for t in tasks:
            chunks[t].append(predict_outputs(specs.tasks[t].head, out.outputs[t]).float().cpu().numpy())
    model.train(was_training)
    return {t: np.concatenate(c) for t, c in chunks.items()}


def evaluate_batch(
    model: torch.nn.Module, batch: Batch, specs: SpecSet, tasks: Sequence[str]
) -> dict[str, dict[str, float]]:
    preds = predict_batch(model, batch, specs, tasks)
    result = {}
    for t in tasks:
        mask = batch.label_mask[t].numpy()
        result[t] = task_metrics(specs.tasks[t].head, preds[t][mask], batch.labels[t].numpy()[mask])
    return result


def evaluate(
    model: torch.nn.Module, specs: SpecSet, samples: Sequence[dict], tasks: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Metrics per task on labelled `samples` (validated beforehand)."""
    tasks = list(tasks) if tasks is not None else labelled_tasks(samples, specs)
    tokenizer = model.config.tokenizer()  # type: ignore[union-attr,operator]
    batch = collate(samples, specs, tasks=tasks, tokenizer=tokenizer)
    return evaluate_batch(model, batch, specs, tasks)


def train(
    model: torch.nn.Module,
    specs: SpecSet,
    train_samples: Sequence[dict],
    val_samples: Sequence[dict],
    config: TrainConfig,
    *,
    tasks: Sequence[str] | None = None,
    parameters: Sequence[torch.nn.Parameter] | None = None,
    penalty: Callable[[], torch.Tensor | None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    keep_initial: bool = False,
) -> TrainResult:
    """Train `model` on all `tasks` jointly; keep the weights of the best validation epoch.

    `parameters` restricts the optimizer (continual stages pass only their own components);
    `penalty()` is added to every step's loss (EWC). With `keep_initial` the starting weights are
    scored as epoch 0 and kept unless an epoch beats them (refitting must never make things worse).
    """
    tasks = list(tasks) if tasks is not None else labelled_tasks(train_samples, specs)
    if not tasks:
        raise ValueError("no task in the spec has a label in the training data")
    if len(val_samples) == 0:
        raise ValueError("validation set is empty; early stopping needs labelled validation samples")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    tokenizer = model.config.tokenizer()  # type: ignore[union-attr,operator]
    train_batch = collate(train_samples, specs, tasks=tasks, tokenizer=tokenizer)
    val_batch = collate(val_samples, specs, tasks=tasks, tokenizer=tokenizer)
    params = (
        list(parameters) if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    )
    # fused: one kernel for all parameters (the CPU step is ~15x faster than the per-tensor loop).
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(config.seed)

    best = float("-inf")
    best_state = copy.deepcopy(model.state_dict())
    best_epoch, best_metrics, stale = 0, {}, 0
    if keep_initial:
        best_metrics = evaluate_batch(model, val_batch, specs, tasks)
        best = score(best_metrics, specs)
    history: list[dict[str, Any]] = []
    start, seen, step_seconds = time.perf_counter(), 0, 0.0
    bar = tqdm(range(1, config.epochs + 1), desc="train", disable=not config.progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(train_batch.size, generator=generator)
        losses = []
        tick = time.perf_counter()
        for i in range(0, train_batch.size, config.batch_size):
            batch = train_batch.select(order[i : i + config.batch_size]).to(device)
            loss = batch_loss(model, batch, specs, tasks)
            extra = penalty() if penalty is not None else None
            if extra is not None:
                loss = loss + extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            seen += batch.size
        step_seconds += time.perf_counter() - tick
        metrics = evaluate_batch(model, val_batch, specs, tasks)
        current = score(metrics, specs)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_score": current, "val": metrics}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", val=f"{current:.4f}")
        if current > best:
            best, best_epoch, best_metrics, stale = current, epoch, metrics, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale > config.patience:
                break
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_epoch, best_metrics, history, seconds, seen / max(step_seconds, 1e-9))


def fit(
    specs: SpecSet,
    train_samples: Sequence[dict],
    val_samples: Sequence[dict],
    *,
    model_config: Any = None,
    train_config: TrainConfig | None = None,
    tasks: Sequence[str] | None = None,
) -> tuple[Flame, TrainResult]:
    """Build a fresh FLAME model for `tasks` (default: all labelled) and train it."""
    from flame_core.config import FlameConfig
    from flame_core.model import build_flame

    tasks = list(tasks) if tasks is not None else labelled_tasks(train_samples, specs)
    sub = specs.subset(tasks)
    train_config = train_config or TrainConfig()
    seed_everything(train_config.seed)
    model = build_flame(model_config or FlameConfig(), sub)
    result = train(model, sub, train_samples, val_samples, train_config, tasks=tasks)
    return model, result
