"""Stacked low-rank components: the stage-t additive deltas of FLAME's continual learning.

A matrix weight W (a conv kernel is flattened to `[out, in*k]`) used by a task at cursor c is
`W_0 + sum_{s<=c} B_s A_s`. Each stage trains a zero-initialised full-shape delta D_t, which is then
replaced by its rank-r truncation `B_t A_t`. Vectors (biases, norm gains) are tiny and keep full deltas.

Data-aware functional energy (the paper's Eq. 2): on routed inputs x with second moment C = E[x x^T],
D carries `E||D x||^2 = tr(D C D^T)`. We truncate in that metric: the rank-r delta that loses the least
functional energy on the stage's own routed inputs is `U_r U_r^T D`, U_r the top eigenvectors of
`D C D^T` (an improvement on the paper's plain SVD, which is the special case C = I).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) or conv (out, in, k) -> (out, in*k); vectors are not matrices."""
    if weight.dim() < 2:
        raise ValueError(f"expected a matrix or conv kernel, got shape {tuple(weight.shape)}")
    return weight.reshape(weight.shape[0], -1)


@dataclass
class LowRank:
    """A frozen factored delta `B @ A`, reshaped to `shape` when materialised."""

    b: torch.Tensor  # (out, r)
    a: torch.Tensor  # (r, in*k)
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def numel(self) -> int:
        return self.a.numel() + self.b.numel()

    def materialise(self) -> torch.Tensor:
        return (self.b @ self.a).reshape(self.shape)


def functional_basis(
    delta: torch.Tensor, second_moment: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs (descending) of `D C D^T`: the output directions of D ordered by the energy they carry
    on inputs with second moment C (C = I when None: plain singular values squared). float64."""
    d = as_matrix(delta).double()
    if second_moment is None:
        gram = d @ d.T
    else:
        c = second_moment.double()
        if c.shape != (d.shape[1], d.shape[1]):
            raise ValueError(
                f"second moment {tuple(c.shape)} does not match the weight's input dim {d.shape[1]}"
            )
        gram = d @ c @ d.T
    evals, evecs = torch.linalg.eigh((gram + gram.T) / 2)
    return evals.flip(0).clamp_min(0.0), evecs.flip(1)


def truncate(delta: torch.Tensor, rank: int, second_moment: torch.Tensor | None = None) -> LowRank:
    """The rank-`rank` M minimising `||(D - M) X||_F` for inputs X with second moment C: `M = U_r U_r^T D`,
    U_r the top eigenvectors of `D C D^T`. With C = None (C = I) this is the truncated SVD (Eckart-Young).
    Factored as B = U_r (out, r) and A = U_r^T D (r, in*k); no inverse of C is needed."""
    d = as_matrix(delta).double()
    full = min(d.shape)
    if not 0 <= rank <= full:
        raise ValueError(f"rank {rank} out of range [0, {full}] for a weight of shape {tuple(delta.shape)}")
    _, u = functional_basis(delta, second_moment)
    b = u[:, :rank]
    a = b.T @ d
    return LowRank(b.to(delta.dtype).contiguous(), a.to(delta.dtype).contiguous(), tuple(delta.shape))


def energy_spectrum(delta: torch.Tensor, second_moment: torch.Tensor | None = None) -> torch.Tensor:
    """Per-rank functional energies (descending); they sum to `tr(D C D^T)`, and the first r of them are
    exactly the energy that `truncate(delta, r, C)` keeps. Weight-only (s_i^2) when C is None."""
    evals, _ = functional_basis(delta, second_moment)
    return evals[: min(as_matrix(delta).shape)]


def rank_for_energy(energies: torch.Tensor, target: float) -> int:
    """Smallest r whose leading energies keep at least `target` of the total (0 for a zero delta)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"energy target must be in (0, 1], got {target}")
    total = float(energies.sum())
    if total <= 0.0:
        return 0
    cum = torch.cumsum(energies, 0) / total
    hits = (cum >= target - 1e-12).nonzero()
    return int(hits[0]) + 1 if len(hits) else len(energies)


def choose_rank(
    delta: torch.Tensor, rank: int | str, energy: float = 0.99, second_moment: torch.Tensor | None = None
) -> int:
    """`rank` as given (capped at full rank), or for `"auto"` the smallest rank keeping `energy` of the
    data-aware functional energy under `second_moment` (weight-only energy if that is None)."""
    full = min(as_matrix(delta).shape)
    if rank == "auto":
        return rank_for_energy(energy_spectrum(delta, second_moment), energy)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative int or 'auto', got {rank!r}")
    return min(rank, full)
