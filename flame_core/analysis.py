"""Spectral and routing analyses of a trained FLAME model (the paper's App. D.4, D.5 and Fig. 6, RQ2).

Spectra (three lenses per expert weight W, conv kernels flattened as `components.as_matrix`):
- input: eigenvalues of C = E[x x^T], the uncentred second moment of the inputs the router actually
  dispatched to W (`statistics.routed_second_moments`);
- weight: squared singular values of W, blind to the data;
- data: the per-rank functional energy of Eq. (2), the eigenvalues of W C W^T, so the first r of them
  are the energy `E||W_r x||^2` that the best rank-r W_r keeps on the routed inputs.
Biases are left out: they add no rank. Proposition 1 predicts the input and data curves saturate early
while the weight curve stays near full rank; that idle rank is what continual stages reuse.

Routing fingerprints: per task and modality, how often each expert is among a sample's top-k and its
mean gate. Task affinity is their overlap, the data-driven "which tasks should share a model" signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from flame_core.batch import Batch
from flame_core.components import as_matrix, energy_spectrum, rank_for_energy
from flame_core.continual import ContinualFlame
from flame_core.model import Flame
from flame_core.naming import is_expert_weight
from flame_core.statistics import routed_second_moments

LENSES: tuple[str, ...] = ("input", "weight", "data")
TARGETS: tuple[float, ...] = (0.9, 0.95, 0.99)


@dataclass
class SpectrumResult:
    """Per-rank energies (descending) of one expert weight under each lens. `rows` counts the routed
    token rows behind C; 0 means the expert was never routed to, and only the weight lens exists."""

    name: str
    shape: tuple[int, int]  # (out, in) of the matrix form
    rows: int
    energies: dict[str, np.ndarray]

    @property
    def routed(self) -> bool:
        return self.rows > 0

    def cumulative(self, lens: str) -> np.ndarray:
        """Normalised cumulative energy at ranks 1..n: non-decreasing, ending at exactly 1 (all zeros
        for an all-zero spectrum)."""
        e = self._lens(lens)
        total = float(e.sum())
        if total <= 0.0:
            return np.zeros_like(e)
        cum = np.minimum(np.cumsum(e) / total, 1.0)
        cum[-1] = 1.0
        return cum

    def rank(self, lens: str, target: float) -> int:
        """Smallest rank keeping `target` of the lens's energy."""
        return rank_for_energy(torch.from_numpy(self._lens(lens)), target)

    def ranks(self) -> dict[str, dict[str, int]]:
        return {lens: {f"{t:g}": self.rank(lens, t) for t in TARGETS} for lens in self.energies}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "rows": self.rows,
            "routed": self.routed,
            "ranks": self.ranks(),
            "cumulative": {lens: self.cumulative(lens).tolist() for lens in self.energies},
        }

    def _lens(self, lens: str) -> np.ndarray:
        if lens not in self.energies:
            why = " (the expert was never routed to)" if not self.routed else ""
            raise ValueError(f"{self.name}: no {lens!r} spectrum{why}; have {sorted(self.energies)}")
        return self.energies[lens]


def effective_weights(module: nn.Module, tasks: Sequence[str], cursor: int | None = None) -> dict[str, Any]:
    """Overrides of a `ContinualFlame` at `cursor` (default: the latest cursor among `tasks`), i.e. base
    plus the stacked deltas up to it; {} for a plain `Flame`, whose parameters are the weights."""
    if not isinstance(module, ContinualFlame):
        return {}
    if cursor is None:
        cursor = max(module.cursor[t] for t in tasks)
    if not 0 <= cursor < len(module.stages):
        raise ValueError(f"cursor {cursor} out of range [0, {len(module.stages) - 1}]")
    return module.parameters_at(cursor)


def pooled_moments(
    flame_model: Flame, module: nn.Module, batch: Batch, tasks: Sequence[str]
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Routed-input second moments of `tasks`, pooled (count-weighted) over their cursors.

    A `ContinualFlame` serves a finished cursor through a separate frozen copy (`cursor_model`), so the
    statistics hooks must sit on that copy; the open stage's cursor still runs on `module.model`."""
    if not isinstance(module, ContinualFlame):
        return routed_second_moments(module, flame_model, batch, tasks)
    groups: dict[int, list[str]] = {}
    for t in tasks:
        groups.setdefault(module.cursor[t], []).append(t)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for c, group in sorted(groups.items()):
        live = module.open_stage is not None and c == module.open_stage.index
        runner, named = (module, module.model) if live else (module.cursor_model(c),) * 2
        moments, seen = routed_second_moments(runner, named, batch, group)
        for name, m in moments.items():
            part = m.double() * seen[name]
            sums[name] = sums[name] + part if name in sums else part
            counts[name] = counts.get(name, 0) + seen[name]
    return {n: (s / counts[n]).float() for n, s in sums.items()}, counts


@torch.no_grad()
def expert_spectra(
    flame_model: Flame,
    module: nn.Module,
    batch: Batch,
    tasks: Sequence[str],
    cursor: int | None = None,
) -> dict[str, SpectrumResult]:
    """The three spectra of every expert weight of every block, on the routed inputs of `tasks`.

    `module` is what runs (`Flame` or `ContinualFlame`), `flame_model` the `Flame` whose parameter names
    are used. For a `ContinualFlame`, C pools the routed inputs of every task at its own cursor, and W is
    the effective weight at `cursor` (default: the latest cursor among `tasks`); pass the tasks of one
    stage to analyse that stage alone."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("expert_spectra needs at least one task")
    unknown = [t for t in tasks if t not in flame_model.specs.tasks]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; known: {sorted(flame_model.specs.tasks)}")
    moments, counts = pooled_moments(flame_model, module, batch, tasks)
    overrides = effective_weights(module, tasks, cursor)
    out: dict[str, SpectrumResult] = {}
    for name, param in flame_model.named_parameters():
        if not is_expert_weight(name):
            continue
        w = overrides.get(name, param).detach().cpu()
        rows = counts.get(name, 0)
        energies: dict[str, np.ndarray] = {}
        if rows:
            c = moments[name].detach().cpu().double()
            evals = torch.linalg.eigvalsh((c + c.T) / 2).flip(0).clamp_min(0.0)
            energies["input"] = evals.numpy()
        energies["weight"] = energy_spectrum(w).numpy()
        if rows:
            energies["data"] = energy_spectrum(w, moments[name].detach().cpu()).numpy()
        shape = tuple(as_matrix(w).shape)
        out[name] = SpectrumResult(name, (shape[0], shape[1]), rows, energies)
    return out


@dataclass
class Fingerprint:
    """One task's routing of one modality over its `n` present samples: `activation[e]`, the share of
    samples with expert e among their top-k (sums to k), and `mean_gate[e]`, the mean gate of e counting
    0 where e was not chosen (sums to 1)."""

    n: int
    activation: np.ndarray  # (E,)
    mean_gate: np.ndarray  # (E,)

    @property
    def usage(self) -> np.ndarray:
        """Activation as a distribution over experts (sums to 1)."""
        total = float(self.activation.sum())
        return self.activation / total if total > 0 else self.activation

    @property
    def gate_when_active(self) -> np.ndarray:
        """Mean gate of e given e was chosen (the paper's right-hand routing panel); 0 if never chosen."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.activation > 0, self.mean_gate / self.activation, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "activation": self.activation.tolist(),
            "mean_gate": self.mean_gate.tolist(),
            "gate_when_active": self.gate_when_active.tolist(),
        }


@torch.no_grad()
def routing_fingerprints(
    module: nn.Module, batch: Batch, tasks: Sequence[str], chunk: int = 256
) -> dict[str, dict[str, Fingerprint]]:
    """Per task (one forward pass per task, eval mode, so a `ContinualFlame` runs each at its cursor) and
    per modality: the routing fingerprint over samples presenting the modality and, when the batch
    carries labels for the task, labelled for it. Modalities no such sample presents are left out.
    Routing is the model's explanation, i.e. from its last block."""
    n_exp = int(module.config.n_experts)  # type: ignore[union-attr, arg-type]
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    result: dict[str, dict[str, Fingerprint]] = {}
    try:
        for task in tasks:
            labelled = task in batch.label_mask and bool(batch.label_mask[task].any())
            sums: dict[str, list[Any]] = {}
            for start in range(0, batch.size, chunk):
                sub = batch.select(torch.arange(start, min(start + chunk, batch.size)))
                routing = module(sub.to(device), [task]).routing
                for m, r in routing.items():
                    keep = r.present.cpu()  # (b,)
                    if labelled:
                        keep = keep & sub.label_mask[task].cpu()
                    if not bool(keep.any()):
                        continue
                    experts, weights = r.experts.cpu()[keep], r.weights.cpu()[keep].double()  # (n, k)
                    chosen = torch.zeros(len(experts), n_exp, dtype=torch.float64).scatter_(1, experts, 1.0)
                    gates = torch.zeros_like(chosen).scatter_add_(1, experts, weights)  # (n, E)
                    acc = sums.setdefault(m, [0, 0.0, 0.0])  # n, sum of chosen, sum of gates
                    acc[0] += len(experts)
                    acc[1] += chosen.sum(0)
                    acc[2] += gates.sum(0)
            result[task] = {
                m: Fingerprint(n, (act / n).numpy(), (gate / n).numpy()) for m, (n, act, gate) in sums.items()
            }
    finally:
        module.train(was_training)
    return result


def overlap(p: np.ndarray, q: np.ndarray) -> float:
    """Histogram intersection of two expert-usage vectors, each normalised to sum 1: 1 for identical
    usage, 0 for disjoint experts."""
    sp, sq = float(np.sum(p)), float(np.sum(q))
    if sp <= 0 or sq <= 0:
        return 0.0
    return float(np.minimum(np.asarray(p) / sp, np.asarray(q) / sq).sum())


class TaskPair(NamedTuple):
    a: str
    b: str
    affinity: float
    shared: tuple[str, ...]  # modalities both tasks route
    shared_overlap: float  # mean overlap on the shared modalities alone; nan when there are none


class TaskAffinity(NamedTuple):
    """`matrix[i, j]` is the affinity of `tasks[i]` and `tasks[j]`; `pairs` ranks every pair, highest
    first: the candidates to train together."""

    tasks: list[str]
    matrix: np.ndarray
    pairs: list[TaskPair]


def task_usage(fps: Mapping[str, Fingerprint]) -> np.ndarray:
    """A task's expert usage: the mean over its modalities of each modality's usage distribution."""
    return np.mean([fp.usage for fp in fps.values()], axis=0)


def task_affinity(fingerprints: Mapping[str, Mapping[str, Fingerprint]]) -> TaskAffinity:
    """Pairwise task affinity from routing fingerprints: symmetric, in [0, 1], 1 on the diagonal.

    affinity(a, b) = overlap(task_usage(a), task_usage(b)): how much of the two tasks' expert traffic
    (each modality weighted equally) lands on the same experts. One definition for every pair, whether
    or not the tasks share modalities. Routers are per modality, so on a shared modality two tasks differ
    only through their data (or, in a `ContinualFlame`, their stages' router heads); that narrower
    signal is reported per pair as `shared_overlap`. Tasks with no fingerprint are left out."""
    tasks = [t for t, fps in fingerprints.items() if fps]
    usage = {t: task_usage(fingerprints[t]) for t in tasks}
    n = len(tasks)
    matrix = np.eye(n)
    pairs: list[TaskPair] = []
    for i in range(n):
        for j in range(i + 1, n):
            fa, fb = fingerprints[tasks[i]], fingerprints[tasks[j]]
            shared = tuple(m for m in fa if m in fb)
            on_shared = [overlap(fa[m].activation, fb[m].activation) for m in shared]
            value = overlap(usage[tasks[i]], usage[tasks[j]])
            matrix[i, j] = matrix[j, i] = value
            pairs.append(
                TaskPair(tasks[i], tasks[j], value, shared, float(np.mean(on_shared)) if shared else math.nan)
            )
    pairs.sort(key=lambda p: (-p.affinity, p.a, p.b))
    return TaskAffinity(tasks, matrix, pairs)
