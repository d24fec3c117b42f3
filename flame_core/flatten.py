"""Hand-flattened features for the scikit-learn baselines: the "no deep model" reference point.

timeseries -> per-feature mean, last, min, max, observed count, plus the number of steps;
tabular -> the values (NaN when missing); embedding -> mean over vectors; image -> pixels;
text -> hashed bag of words folded into `text_buckets` counts. An absent modality is all NaN
(HistGradientBoosting handles NaN natively; the logistic baseline imputes).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from flame_core.specs import ModalitySpec, SpecSet
from flame_core.tokenizer import HashTokenizer


def _timeseries(spec: ModalitySpec, payload: dict | None) -> np.ndarray:
    d = spec.dim
    out = np.full(5 * d + 1, np.nan)
    if payload is None:
        return out
    v = np.array([[np.nan if x is None else x for x in row] for row in payload["values"]], dtype=float)
    obs = ~np.isnan(v)
    count = obs.sum(0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing channels give NaN, by design
        out[:d] = np.nanmean(np.where(obs, v, np.nan), 0) if len(v) else np.nan
        last = np.full(d, np.nan)
        for j in range(d):
            idx = np.flatnonzero(obs[:, j])
            if len(idx):
                last[j] = v[idx[-1], j]
        out[d : 2 * d] = last
        out[2 * d : 3 * d] = np.where(count > 0, np.nanmin(np.where(obs, v, np.inf), 0), np.nan)
        out[3 * d : 4 * d] = np.where(count > 0, np.nanmax(np.where(obs, v, -np.inf), 0), np.nan)
    out[4 * d : 5 * d] = count
    out[5 * d] = len(v)
    return out


def _dense(spec: ModalitySpec, payload: dict | None, tokenizer: HashTokenizer, buckets: int) -> np.ndarray:
    if spec.kind == "timeseries":
        return _timeseries(spec, payload)
    if spec.kind == "tabular":
        if payload is None:
            return np.full(spec.dim, np.nan)
        return np.array([np.nan if x is None else x for x in payload["values"]], dtype=float)
    if spec.kind == "embedding":
        if payload is None:
            return np.full(spec.dim, np.nan)
        vecs = payload.get("embeddings") or [payload["embedding"]]
        return np.asarray(vecs, dtype=float).mean(0)
    if spec.kind == "image":
        size = spec.channels * spec.dim * spec.dim
        return (
            np.full(size, np.nan) if payload is None else np.asarray(payload["pixels"], dtype=float).ravel()
        )
    counts = np.zeros(buckets)
    if payload is None:
        return np.full(buckets, np.nan)
    for token in tokenizer.encode(payload["text"]):
        counts[token % buckets] += 1
    return counts


def flatten_samples(
    samples: Sequence[dict], specs: SpecSet, modalities: Sequence[str], *, text_buckets: int = 128
) -> np.ndarray:
    """(N, F) float matrix of the given modalities, in the given order."""
    tokenizer = HashTokenizer()
    rows = []
    for s in samples:
        mods = s.get("modalities", {})
        rows.append(
            np.concatenate(
                [_dense(specs.modalities[m], mods.get(m), tokenizer, text_buckets) for m in modalities]
            )
        )
    return np.vstack(rows)


def label_array(samples: Sequence[dict], task: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels of labelled samples, boolean mask over samples)."""
    labels, mask = [], []
    for s in samples:
        y = s.get("labels", {}).get(task) if "labels" in s else s.get("label")
        mask.append(y is not None)
        if y is not None:
            labels.append(y)
    return np.asarray(labels), np.asarray(mask, dtype=bool)
