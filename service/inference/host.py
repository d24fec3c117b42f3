"""ModelHost: holds the model version the alias `active` points at, and swaps it without downtime.

`reload_if_changed()` reads the alias; when it moved, the new version is loaded *beside* the old
one (digest-checked files, moved to the device, every cursor model pre-built so no request pays for
it; a version descending from the held one reuses its cursor models), then one attribute assignment
swaps them. A request takes `host.current` once and keeps that
`LoadedVersion` to the end, so in-flight requests finish on the version they started with, and the
old one is freed when its last request drops it.

Batching: `service.inference.batcher` forms batches across requests and calls
`LoadedVersion.forward`. A batch-invariant version (the default) collates every request with fixed
lengths (`prepare`) and pads batches to whole row tiles, so a sample's output bits never depend on
the requests it was batched with (`flame_core.invariance`, docs/design.md).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from flame_core.batch import Batch
from flame_core.collate import collate
from flame_core.continual import ContinualFlame
from flame_core.invariance import fixed_lengths, make_batch_invariant, pad_rows
from flame_core.model import Flame, FlameOutput, Routing
from service.artifacts import ArtifactStore
from service.errors import ModelNotReady
from service.observability import set_model_version
from service.registry.errors import AliasNotFound
from service.registry.lineage import lineage_ids
from service.registry.versions import resolve_alias
from service.runtime import freeze_heap
from service.versioning import load_version

log = logging.getLogger("flame.host")


def resolve_device(device: str) -> torch.device:
    """`auto` means CUDA when this process can see a GPU, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class LoadedVersion:
    """One immutable, ready-to-serve model version: its id, digest and a frozen model per cursor."""

    id: str
    digest: str
    model: ContinualFlame
    device: torch.device
    cursor_models: dict[int, Flame] = field(default_factory=dict)
    tokenizer: Any = None
    # fixed padded lengths per modality when batch-invariant, else None (pad to the batch's longest)
    lengths: dict[str, int] | None = None

    @property
    def specs(self):  # type: ignore[no-untyped-def]
        return self.model.specs

    @property
    def invariant(self) -> bool:
        return self.lengths is not None

    def cursor_of(self, task: str) -> int:
        return self.model.cursor[task]

    def prepare(self, samples: list[dict], task: str) -> Batch:
        """Collate validated samples for `task`: one request's part of a batch (CPU tensors)."""
        return collate(samples, self.specs, tasks=[task], tokenizer=self.tokenizer, lengths=self.lengths)

    def forward(self, batch: Batch, task: str) -> FlameOutput:
        """One plain forward pass of the task's cursor model (no weight swapping per call), on
        `batch.size` rows: a batch-invariant version pads the rows, then drops the padding's outputs.
        On CUDA the batch is copied from pinned memory without blocking; nothing syncs until the
        caller reads the outputs."""
        model = self.cursor_models[self.cursor_of(task)]
        n = batch.size
        if self.invariant:
            batch = pad_rows(batch)
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        with torch.inference_mode():
            out = model(batch.to(self.device), [task])
        if out.outputs[task].shape[0] == n:
            return out
        routing = {
            m: Routing(
                r.experts[:n], r.weights[:n], r.present[:n], None if r.summary is None else r.summary[:n]
            )
            for m, r in out.routing.items()
        }
        return out._replace(outputs={t: v[:n] for t, v in out.outputs.items()}, routing=routing)


def load_loaded_version(
    store: ArtifactStore,
    version: Any,
    device: torch.device,
    ancestor: LoadedVersion | None = None,
    *,
    invariant: bool = True,
) -> LoadedVersion:
    """Load `version` ready to serve. `ancestor`, a loaded version that `version` descends from, lends
    its cursor models for the cursors both have: a later stage never changes an earlier cursor's
    weights (the structural guarantee), so a new stage costs one cursor model, not one per stage.
    `invariant`: batch-invariant serving (fixed lengths, whole row tiles)."""
    cl = load_version(store, version, device=device)
    cl.eval()
    cursors = sorted(set(cl.cursor.values()))
    same = ancestor is not None and ancestor.device == device and ancestor.invariant == invariant
    shared = ancestor.cursor_models if ancestor is not None and same else {}
    models = {c: shared[c] if c in shared else cl.cursor_model(c).eval() for c in cursors}
    if invariant:
        for m in models.values():
            make_batch_invariant(m)
    return LoadedVersion(
        id=version.id,
        digest=version.digest,
        model=cl,
        device=device,
        cursor_models=models,
        tokenizer=cl.config.tokenizer(),
        lengths=fixed_lengths(cl.specs, cl.config) if invariant else None,
    )


class ModelHost:
    """The process's model slot. Thread-safe: one reload at a time, lock-free reads of `current`."""

    def __init__(
        self,
        *,
        store: ArtifactStore,
        session_factory: sessionmaker[Session],
        device: str = "auto",
        alias: str = "active",
        batch_invariant: bool = True,
    ) -> None:
        self.store = store
        self.batch_invariant = batch_invariant
        self.session_factory = session_factory
        self.device = resolve_device(device)
        self.alias = alias
        self._current: LoadedVersion | None = None
        self._reload_lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedVersion | None:
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def get(self) -> LoadedVersion:
        """The version to serve this request with; hold on to it for the whole request."""
        loaded = self._current
        if loaded is None:
            reason = f" ({self.last_error})" if self.last_error else ""
            raise ModelNotReady(f"no model version is loaded yet{reason}; retry shortly")
        return loaded

    def reload_if_changed(self) -> bool:
        """Load the alias's version if it differs from the held one; True when a swap happened.

        A failed load leaves the held version serving (and the error in `last_error`)."""
        with self._reload_lock:
            with self.session_factory() as session:
                try:
                    version = resolve_alias(session=session, alias=self.alias)
                except AliasNotFound as e:
                    self.last_error = e.message
                    return False
                held = self._current
                if held is not None and held.id == version.id and held.digest == version.digest:
                    return False
                ancestors = lineage_ids(session=session, version=version.id)[:-1]
                session.expunge(version)
            ancestor = held if held is not None and held.id in ancestors else None
            try:
                loaded = load_loaded_version(
                    self.store, version, self.device, ancestor, invariant=self.batch_invariant
                )
            except Exception as e:  # noqa: BLE001 - keep serving the old version, report why
                self.last_error = f"loading version {version.id!r} failed: {e}"
                log.exception("model load failed", extra={"version": version.id})
                return False
            self._current = loaded  # the atomic swap
            self.last_error = None
            freeze_heap()  # the new model's objects leave the garbage collector's hot path
            set_model_version(loaded.id, held.id if held is not None else None, loaded.specs.tasks)
            log.info("model version loaded", extra={"version": loaded.id})
            return True
