"""digits: scikit-learn's 8x8 handwritten digits cut into views, the paper's MNIST demo protocol.

Views of one 8x8 image (pixel intensities 0..16):
- `rows`: timeseries, 8 steps (row index as the time, in "hours" 0..7) x 8 features (the row), /16;
- `cols`: timeseries, 8 steps (column index as the time) x 8 features (the column), /16;
- `quadrants`: one tabular modality of 64 values, the four 4x4 quadrants (top-left, top-right,
  bottom-left, bottom-right) each flattened row by row, /16;
- `image`: the raw 8x8 grayscale pixels, value_range [0, 16].
Tasks use different view subsets so that routing has something to share and something to separate.
Ships with scikit-learn: no download.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flame_core.benchmarks.base import BenchmarkData, split_indices, subsample, to_list
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec

TASKS = {  # name -> (modalities, head, primary metric)
    "digit": (
        ("rows", "cols", "image"),
        HeadSpec("multiclass", 10, tuple(str(d) for d in range(10))),
        "accuracy",
    ),
    "parity": (("quadrants", "rows"), HeadSpec("binary"), "auroc"),
    "ge5": (("cols", "quadrants"), HeadSpec("binary"), "auroc"),
}


def build_specs() -> SpecSet:
    modalities = {
        "rows": ModalitySpec("rows", "timeseries", dim=8, max_len=8),
        "cols": ModalitySpec("cols", "timeseries", dim=8, max_len=8),
        "quadrants": ModalitySpec("quadrants", "tabular", dim=64),
        "image": ModalitySpec("image", "image", dim=8, channels=1, value_range=(0.0, 16.0)),
    }
    tasks = {name: TaskSpec(name, mods, head) for name, (mods, head, _) in TASKS.items()}
    return SpecSet(modalities=modalities, tasks=tasks)


def quadrants(image: np.ndarray) -> np.ndarray:
    """(8, 8) -> (64,): top-left, top-right, bottom-left, bottom-right 4x4 blocks, each row-major."""
    return np.concatenate([image[r : r + 4, c : c + 4].ravel() for r in (0, 4) for c in (0, 4)])


def make_sample(image: np.ndarray, digit: int, sample_id: str) -> dict[str, Any]:
    steps = [float(i) for i in range(8)]
    scaled = image / 16.0
    return {
        "id": sample_id,
        "modalities": {
            "rows": {"times": steps, "values": to_list(scaled)},
            "cols": {"times": list(steps), "values": to_list(scaled.T)},
            "quadrants": {"values": to_list(quadrants(scaled))},
            "image": {"pixels": to_list(image)},
        },
        "labels": {"digit": int(digit), "parity": int(digit % 2), "ge5": int(digit >= 5)},
    }


def load(seed: int = 0, n: int | None = None) -> BenchmarkData:
    """All 1,797 digits (or a stratified subsample of `n`), split 60/20/20 stratified by digit."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images, targets = raw.images.astype(np.float64), raw.target.astype(np.int64)  # (N, 8, 8), (N,)
    keep = subsample(len(targets), n, seed, targets)
    images, targets = images[keep], targets[keep]
    samples = [make_sample(images[i], int(targets[i]), f"digit-{keep[i]:04d}") for i in range(len(keep))]
    idx = split_indices(len(samples), seed, targets)
    return BenchmarkData(
        name="digits",
        specs=build_specs(),
        splits={s: [samples[i] for i in ix] for s, ix in idx.items()},
        achievable={},
        primary_metric={name: metric for name, (_, _, metric) in TASKS.items()},
        description=(
            f"scikit-learn 8x8 digits ({len(samples)} images) as views rows/cols (timeseries), quadrants "
            "(tabular, 4 blocks of 16) and image; tasks digit (rows+cols+image), parity (quadrants+rows), "
            "ge5 (cols+quadrants)."
        ),
    )
