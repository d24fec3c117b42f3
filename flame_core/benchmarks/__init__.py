"""Benchmark datasets (docs/design.md s9): one synthetic generator with known true risks and three real
datasets, all returned as specs plus JSON-format samples split into train/val/test."""

from __future__ import annotations

from collections.abc import Callable

from flame_core.benchmarks.base import BenchmarkData

BENCHMARKS: tuple[str, ...] = ("synthetic-icu", "digits", "support2", "pbc2")

__all__ = ["BENCHMARKS", "BenchmarkData", "load_benchmark"]


def _loader(name: str) -> Callable[..., BenchmarkData]:
    # Imported lazily: each loader pulls in only what it needs (sklearn's digits, the CSV files).
    if name == "synthetic-icu":
        from flame_core.benchmarks.synthetic_icu import generate

        return generate
    if name == "digits":
        from flame_core.benchmarks.digits import load as load_digits

        return load_digits
    if name == "support2":
        from flame_core.benchmarks.support2 import load as load_support2

        return load_support2
    from flame_core.benchmarks.pbc2 import load as load_pbc2

    return load_pbc2


def load_benchmark(name: str, *, seed: int = 0, n: int | None = None) -> BenchmarkData:
    """Load (or generate) benchmark `name` deterministically for `seed`; `n` caps the number of
    samples (patients) for quick runs, None means the full dataset (synthetic-icu: 5,000)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got seed={seed!r}")
    return _loader(name)(seed=seed, n=n)
