"""Samples (JSON-like dicts) -> one `Batch` of padded tensors, in the format of `flame_core.batch`.

Expects samples that passed `validate_sample` (raw or canonical form both work); it does not
re-check values. Each field is built in numpy from one flat array per modality and handed to torch
with a single `from_numpy`, so collating hundreds of samples takes milliseconds.

Padding: every variable-length modality is padded to the longest sample in the batch (or to a fixed
length, for batch-invariant serving), and to at least one step so tensors are never empty. `pad` is
True on real steps only; a sample without the modality has `present` False, zeros everywhere and
`pad` all False. A missing value inside a present timeseries/tabular payload is 0 with `obs` False.
A text with no tokens, and a timeseries or tabular payload with no observed value, count as absent
(the model then never attends over nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from flame_core.batch import Batch, ModalityBatch
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet
from flame_core.tokenizer import HashTokenizer

NAN_FOR_NONE: dict[Any, float] = {None: float("nan")}


def _ragged(seqs: list[list[Any] | None], width: int, name: str) -> tuple[np.ndarray, ...]:
    """Flatten per-sample lists of rows; return (flat rows (N, width) float64, lengths (B,), b, t)."""
    lengths = np.array([0 if s is None else len(s) for s in seqs], dtype=np.int64)
    rows = [row for s in seqs if s is not None for row in s]
    try:
        if rows and set(map(len, rows)) != {width}:
            raise ValueError
        # C-speed None -> nan: NAN_FOR_NONE.get(v, v) is nan for None and v otherwise.
        items = map(NAN_FOR_NONE.get, chain.from_iterable(rows), chain.from_iterable(rows))
        flat = np.fromiter(items, np.float64, count=len(rows) * width).reshape(len(rows), width)
    except (ValueError, TypeError):
        msg = f"modality {name!r}: every step needs {width} numbers; validate samples first"
        raise ValueError(msg) from None
    b_idx = np.repeat(np.arange(len(seqs)), lengths)
    t_idx = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return flat, lengths, b_idx, t_idx


def _padded(
    lengths: np.ndarray, b_idx: np.ndarray, t_idx: np.ndarray, fixed: int | None
) -> tuple[int, np.ndarray]:
    longest = int(lengths.max())
    if fixed is not None and longest > fixed:
        raise ValueError(f"a sample has {longest} steps, more than the fixed length {fixed}")
    steps = max(1, longest if fixed is None else fixed)
    pad = np.zeros((len(lengths), steps), dtype=bool)
    pad[b_idx, t_idx] = True
    return steps, pad


def _sequence(payloads: list[Any], spec: ModalitySpec, rows_key: str, fixed: int | None) -> ModalityBatch:
    """timeseries (values with missing) or embedding (vectors); both carry times in hours."""
    seqs: list[list[Any] | None] = []
    times_in: list[list[Any] | None] = []
    for p in payloads:
        if p is None:
            seqs.append(None)
            times_in.append(None)
        elif rows_key == "embeddings" and "embedding" in p:
            seqs.append([p["embedding"]])
            times_in.append([0.0])
        else:
            seqs.append(p[rows_key])
            times_in.append(p.get("times") or [0.0] * len(p[rows_key]))
    flat, lengths, b_idx, t_idx = _ragged(seqs, spec.dim, spec.name)
    steps, pad = _padded(lengths, b_idx, t_idx, fixed)
    bsz = len(payloads)
    values = np.zeros((bsz, steps, spec.dim), dtype=np.float32)
    times = np.zeros((bsz, steps), dtype=np.float32)
    times[b_idx, t_idx] = np.fromiter(
        (t for ts in times_in if ts is not None for t in ts), np.float64, count=len(b_idx)
    )
    obs = None
    present = lengths > 0
    if spec.kind == "timeseries":
        seen = ~np.isnan(flat)  # (N, D)
        obs_np = np.zeros((bsz, steps, spec.dim), dtype=bool)
        obs_np[b_idx, t_idx] = seen
        present &= obs_np.any(axis=(1, 2))  # nothing observed counts as missing
        pad[~present] = False
        obs = torch.from_numpy(obs_np)
        flat = np.where(seen, flat, 0.0)
    values[b_idx, t_idx] = flat
    return ModalityBatch(
        spec.kind,
        torch.from_numpy(values),
        torch.from_numpy(present),
        obs=obs,
        times=torch.from_numpy(times),
        pad=torch.from_numpy(pad),
    )


def _tabular(payloads: list[Any], spec: ModalitySpec) -> ModalityBatch:
    flat, lengths, b_idx, _ = _ragged(
        [None if p is None else [p["values"]] for p in payloads], spec.dim, spec.name
    )
    seen = ~np.isnan(flat)
    values = np.zeros((len(payloads), spec.dim), dtype=np.float32)
    obs = np.zeros((len(payloads), spec.dim), dtype=bool)
    values[b_idx] = np.where(seen, flat, 0.0)
    obs[b_idx] = seen
    present = obs.any(axis=1)  # a row with nothing observed counts as missing
    return ModalityBatch(
        "tabular", torch.from_numpy(values), torch.from_numpy(present), obs=torch.from_numpy(obs)
    )


def _text(payloads: list[Any], tokenizer: HashTokenizer, fixed: int | None) -> ModalityBatch:
    ids = [[] if p is None else tokenizer.encode(p["text"]) for p in payloads]
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    b_idx = np.repeat(np.arange(len(ids)), lengths)
    t_idx = np.arange(len(b_idx)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    steps, pad = _padded(lengths, b_idx, t_idx, fixed)
    values = np.zeros((len(ids), steps), dtype=np.int64)
    values[b_idx, t_idx] = np.fromiter((i for row in ids for i in row), np.int64, count=len(b_idx))
    return ModalityBatch(
        "text", torch.from_numpy(values), torch.from_numpy(lengths > 0), pad=torch.from_numpy(pad)
    )


def _image(payloads: list[Any], spec: ModalitySpec) -> ModalityBatch:
    shape = (spec.channels, spec.dim, spec.dim)
    present = np.array([p is not None for p in payloads])
    values = np.zeros((len(payloads), *shape), dtype=np.float32)
    if present.any():
        imgs = [p["pixels"] for p in payloads if p is not None]
        imgs = [px if isinstance(px[0][0], list) else [px] for px in imgs]  # H x W -> 1 x H x W
        try:
            values[present] = np.array(imgs, dtype=np.float32).reshape(-1, *shape)
        except (ValueError, TypeError):
            msg = f"modality {spec.name!r}: images must be {shape}; validate samples first"
            raise ValueError(msg) from None
    return ModalityBatch("image", torch.from_numpy(values), torch.from_numpy(present))


def _labels(raw: list[Any], head: HeadSpec) -> tuple[torch.Tensor, torch.Tensor]:
    mask = np.array([v is not None for v in raw])
    if head.type == "multilabel":
        out = np.zeros((len(raw), head.classes), dtype=np.float32)
        if mask.any():
            out[mask] = np.array([v for v in raw if v is not None], dtype=np.float32)
    elif head.type == "regression":
        out = np.array([0.0 if v is None else v for v in raw], dtype=np.float32)
    else:
        names = head.labels
        out = np.array(
            [0 if v is None else names.index(v) if isinstance(v, str) else int(v) for v in raw],
            dtype=np.int64,
        )
    return torch.from_numpy(out), torch.from_numpy(mask)


def _label_of(sample: dict[str, Any], task: str, single_task: bool) -> Any:
    if "labels" in sample:
        return (sample["labels"] or {}).get(task)
    if sample.get("label") is not None:
        if not single_task:
            raise ValueError(
                f"sample {sample.get('id')!r} has a single 'label' but several tasks are in "
                "play; use 'labels': {task: label}"
            )
        return sample["label"]
    return None


def collate(
    samples: Sequence[dict[str, Any]],
    specs: SpecSet,
    *,
    tasks: Sequence[str] | None = None,
    tokenizer: HashTokenizer | None = None,
    lengths: Mapping[str, int] | None = None,
) -> Batch:
    """Pad and stack `samples` for the modalities of `tasks` (default: all specs) and their labels.

    `lengths` fixes the padded length of variable-length modalities (steps, or text tokens) instead
    of the batch's longest (see `flame_core.invariance.fixed_lengths`)."""
    if len(samples) == 0:
        raise ValueError("cannot collate an empty list of samples")
    task_names = list(specs.tasks) if tasks is None else list(tasks)
    unknown = [t for t in task_names if t not in specs.tasks]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; known: {sorted(specs.tasks)}")
    used = {m for t in task_names for m in specs.tasks[t].modalities}
    names = [m for m in specs.modalities if tasks is None or m in used]
    # Modalities outside `specs` are ignored here (a model of some tasks reading samples that carry
    # more); `validation.validate_sample` is where an unknown modality is an error.
    tokenizer = tokenizer or HashTokenizer()

    mods: dict[str, ModalityBatch] = {}
    for name in names:
        spec = specs.modalities[name]
        payloads = [s["modalities"].get(name) for s in samples]
        fixed = None if lengths is None else lengths.get(name)
        if spec.kind == "timeseries":
            mods[name] = _sequence(payloads, spec, "values", fixed)
        elif spec.kind == "embedding":
            mods[name] = _sequence(payloads, spec, "embeddings", fixed)
        elif spec.kind == "tabular":
            mods[name] = _tabular(payloads, spec)
        elif spec.kind == "text":
            mods[name] = _text(payloads, tokenizer, fixed)
        else:
            mods[name] = _image(payloads, spec)

    labels, label_mask = {}, {}
    for t in task_names:
        raw = [_label_of(s, t, len(task_names) == 1) for s in samples]
        labels[t], label_mask[t] = _labels(raw, specs.tasks[t].head)
    ids = [None if s.get("id") is None else str(s["id"]) for s in samples]
    return Batch(modalities=mods, size=len(samples), labels=labels, label_mask=label_mask, ids=ids)


class SampleDataset(Dataset):
    """A list of validated samples; the loader's `collate` does all tensor work per batch."""

    def __init__(self, samples: Sequence[dict[str, Any]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]


def make_loader(
    samples: Sequence[dict[str, Any]],
    specs: SpecSet,
    *,
    tasks: Sequence[str] | None = None,
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    tokenizer: HashTokenizer | None = None,
) -> DataLoader:
    """Batches of `collate`d samples; with `shuffle`, the order is fixed by `seed`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    fn = partial(collate, specs=specs, tasks=tasks, tokenizer=tokenizer or HashTokenizer())
    return DataLoader(
        SampleDataset(samples),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=fn,
        num_workers=0,
    )
