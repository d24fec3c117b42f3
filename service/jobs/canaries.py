"""Canaries: a few of each task's validation samples and the sha256 of the model's outputs on them.

When a task is introduced (stage 0 or any later stage) up to `CANARY_SIZE` of its validation samples
(labelled ones first) are stored as an artifact, and the digest of the task's raw outputs on them
is stored with the task: float32 bytes, samples in stored order, computed exactly as the serving
host computes a prediction (`load_loaded_version`, `validate_sample`, `LoadedVersion.prepare` and
`LoadedVersion.forward` of the task's cursor model; batch-invariant, so the same bits as any batch
the host forms). The promotion gate (`service.jobs.promotion`)
replays every earlier task's canaries on a new version before `active` may move to it.

Canaries always run on the CPU with one intra-op thread, so a digest recorded by one process (the
API's bootstrap, a worker) is reproduced bit for bit by another whatever its thread count or device.
Canary samples are training data the user uploaded, never request payloads.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch

from flame_core.validation import SampleInvalid, validate_sample
from service.artifacts import ArtifactStore
from service.inference.host import LoadedVersion, load_loaded_version
from service.registry.models import ModelVersion
from service.registry.records import TaskRecord
from service.registry.versions import manifest_digest

CANARY_SIZE = 8
CPU = torch.device("cpu")
_THREADS = threading.Lock()


@contextmanager
def _one_thread() -> Iterator[None]:
    with _THREADS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def load_as_host(
    store: ArtifactStore, files: Mapping[str, bytes], *, version_id: str = "new"
) -> LoadedVersion:
    """Store `files` (role -> bytes; idempotent) and load them back as the serving host would: from
    the digest-checked blobs, every cursor model built. Nothing is registered."""
    manifest = [
        {"role": role, "name": role, "sha256": store.put_bytes(data), "size": len(data)}
        for role, data in files.items()
    ]
    version = ModelVersion(id=version_id, digest=manifest_digest(manifest), manifest=manifest)
    return load_loaded_version(store, version, CPU)


def _labelled(sample: Mapping[str, Any], task: str) -> bool:
    labels = sample.get("labels")
    return isinstance(labels, Mapping) and labels.get(task) is not None


def choose(loaded: LoadedVersion, task: str, samples: Sequence[Any], n: int = CANARY_SIZE) -> list[dict]:
    """Up to `n` samples the task can predict (labelled ones first), reduced to their modalities."""
    ordered = sorted(
        (s for s in samples if isinstance(s, Mapping)), key=lambda s: not _labelled(s, task)
    )  # stable: file order within each group
    chosen: list[dict] = []
    for sample in ordered:
        canary = {"modalities": sample.get("modalities")}
        try:
            validate_sample(canary, loaded.specs, [task])
        except SampleInvalid:
            continue
        chosen.append(canary)
        if len(chosen) == n:
            break
    return chosen


def outputs_digest(loaded: LoadedVersion, task: str, samples: Sequence[Any]) -> str:
    """sha256 of the task's outputs on `samples` (float32 bytes, in order), as the host computes them."""
    canonical = [validate_sample(s, loaded.specs, [task], index=i) for i, s in enumerate(samples)]
    batch = loaded.prepare(canonical, task)
    with _one_thread():
        outputs = loaded.forward(batch, task).outputs[task]
    data = outputs.detach().to(CPU, torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def record(loaded: LoadedVersion, store: ArtifactStore, task: str, samples: Sequence[Any]) -> dict | None:
    """Store the task's canaries and their output digest; None when no sample fits the task."""
    chosen = choose(loaded, task, samples)
    if not chosen:
        return None
    blob = json.dumps({"task": task, "samples": chosen}, sort_keys=True, separators=(",", ":")).encode()
    return {
        "samples_sha256": store.put_bytes(blob),
        "n": len(chosen),
        "outputs_sha256": outputs_digest(loaded, task, chosen),
        "dtype": "float32",
        "device": "cpu",
    }


def replay(loaded: LoadedVersion, store: ArtifactStore, task: str, canary: Mapping[str, Any]) -> str:
    """The digest `loaded` gives on the task's stored canaries (compare with `outputs_sha256`)."""
    stored = json.loads(store.read_bytes(canary["samples_sha256"]))
    return outputs_digest(loaded, task, stored["samples"])


def with_canaries(
    loaded: LoadedVersion, store: ArtifactStore, tasks: Sequence[TaskRecord], samples: Sequence[Any]
) -> list[TaskRecord]:
    """`tasks` with their canaries recorded on `loaded` from `samples` (validation data)."""
    return [replace(t, canary=record(loaded, store, t.name, samples)) for t in tasks]
