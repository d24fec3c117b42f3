"""Hand-built batches for the model tests, so they do not depend on `flame_core.collate`.

Tests get the builders through the `mk` fixture (pytest runs with --import-mode=importlib, so test
files cannot import this module by name)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from flame_core.batch import Batch, ModalityBatch
from flame_core.config import FlameConfig
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec


def tiny_config(**overrides: object) -> FlameConfig:
    base = dict(
        d_model=16,
        n_heads=2,
        n_experts=4,
        top_k=2,
        expert_hidden=32,
        ts_ref_points=4,
        ts_time_dim=8,
        text_buckets=50,
        text_max_tokens=32,
        text_chunk=2,
        image_patch=2,
        dropout=0.0,
    )
    base.update(overrides)
    return FlameConfig(**base)  # type: ignore[arg-type]


def tiny_specs(head: HeadSpec | None = None, interaction: str = "spread") -> SpecSet:
    """Three modalities (timeseries, tabular, text) and one task over all of them."""
    modalities = {
        "vitals": ModalitySpec("vitals", "timeseries", dim=3),
        "labs": ModalitySpec("labs", "tabular", dim=5),
        "notes": ModalitySpec("notes", "text"),
    }
    task = TaskSpec("t", ("vitals", "labs", "notes"), head or HeadSpec("binary"), interaction)  # type: ignore[arg-type]
    return SpecSet(modalities=modalities, tasks={"t": task})


def timeseries_batch(
    bsz: int, steps: int, dim: int, gen: torch.Generator, miss: float = 0.3
) -> ModalityBatch:
    """Irregular times (random gaps), random missing values, random lengths >= 1."""
    gaps = torch.rand(bsz, steps, generator=gen) * 5.0
    times = gaps.cumsum(1)
    lengths = torch.randint(1, steps + 1, (bsz,), generator=gen)
    pad = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    obs = (torch.rand(bsz, steps, dim, generator=gen) > miss) & pad.unsqueeze(-1)
    values = torch.randn(bsz, steps, dim, generator=gen) * obs
    times = times * pad
    return ModalityBatch(
        "timeseries", values, torch.ones(bsz, dtype=torch.bool), obs=obs, times=times, pad=pad
    )


def tabular_batch(bsz: int, dim: int, gen: torch.Generator, miss: float = 0.2) -> ModalityBatch:
    obs = torch.rand(bsz, dim, generator=gen) > miss
    values = torch.randn(bsz, dim, generator=gen) * obs
    return ModalityBatch("tabular", values, torch.ones(bsz, dtype=torch.bool), obs=obs)


def text_batch(bsz: int, steps: int, vocab: int, gen: torch.Generator) -> ModalityBatch:
    lengths = torch.randint(1, steps + 1, (bsz,), generator=gen)
    pad = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    ids = torch.randint(1, vocab + 1, (bsz, steps), generator=gen) * pad
    return ModalityBatch("text", ids, torch.ones(bsz, dtype=torch.bool), pad=pad)


def absent(mb: ModalityBatch, rows: list[int]) -> ModalityBatch:
    """Marks `rows` absent the way collate does: present False and all-zero rows."""
    present = mb.present.clone()
    present[rows] = False

    def zero(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.clone()
        t[rows] = 0
        return t

    return ModalityBatch(mb.kind, zero(mb.values), present, zero(mb.obs), zero(mb.times), zero(mb.pad))  # type: ignore[arg-type]


def tiny_batch(bsz: int = 6, seed: int = 0, vocab: int = 50) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    mods = {
        "vitals": timeseries_batch(bsz, 7, 3, gen),
        "labs": tabular_batch(bsz, 5, gen),
        "notes": text_batch(bsz, 9, vocab, gen),
    }
    return Batch(modalities=mods, size=bsz)


@pytest.fixture
def mk() -> Iterator[SimpleNamespace]:
    """Builders for tiny configs, specs and batches. Seeds torch so model init is reproducible, and runs
    on one thread: tiny ops gain nothing from two, and on a busy 2-core machine two threads wait on
    each other at every op (tens of times slower)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SimpleNamespace(
        config=tiny_config,
        specs=tiny_specs,
        batch=tiny_batch,
        timeseries=timeseries_batch,
        tabular=tabular_batch,
        text=text_batch,
        absent=absent,
    )
    torch.set_num_threads(threads)
