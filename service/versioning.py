"""The bridge between `flame_core`'s ContinualFlame and the registry: what a model version stores.

A version's files (roles, in order): `manifest` (JSON: `flame_core.checkpoint.continual_manifest`)
and `weights` (safetensors of `continual_tensors`: the whole stacked model, so any version loads
alone). Unchanged bytes share one content-addressed blob across versions.
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from flame_core.checkpoint import build_continual, continual_manifest, continual_tensors
from flame_core.components import LowRank
from flame_core.continual import ContinualFlame
from service.artifacts import ArtifactStore
from service.registry.models import ModelVersion
from service.registry.records import ComponentRecord, ModalityRecord, TaskRecord

MANIFEST, WEIGHTS = "manifest", "weights"


def version_files(cl: ContinualFlame) -> dict[str, bytes]:
    # Insertion order kept (no sort_keys): modules are rebuilt in the order they were trained in,
    # so a loaded version trains on exactly as the original would (same RNG draws per modality).
    manifest = json.dumps(continual_manifest(cl)).encode()
    return {MANIFEST: manifest, WEIGHTS: save_safetensors(continual_tensors(cl))}


def load_version(
    store: ArtifactStore, version: ModelVersion, device: str | torch.device = "cpu"
) -> ContinualFlame:
    """Rebuild the version's ContinualFlame (eval mode) from its stored, digest-checked files."""
    meta = json.loads(store.read_bytes(version.file(MANIFEST)["sha256"]))
    tensors = load_safetensors(store.read_bytes(version.file(WEIGHTS)["sha256"]))
    return build_continual(meta, tensors).to(device).eval()


def stage_records(
    cl: ContinualFlame,
    stage_index: int,
    metrics: dict[str, dict] | None = None,
    cards: dict[str, dict] | None = None,
) -> tuple[list[ComponentRecord], list[TaskRecord], list[ModalityRecord]]:
    """Registry rows for one finished stage: its components (rank-r factors, full vectors; stage 0:
    every base weight), its new tasks with their cursor, post-truncation metrics and model card (see
    `flame_core.card`), and its new modalities."""
    stage = cl.stages[stage_index]
    components: list[ComponentRecord] = []
    if stage_index == 0:
        components = [
            ComponentRecord(0, n, p.numel()) for n, p in cl.model.named_parameters() if cl.birth[n] == 0
        ]
    else:
        for n, d in stage.deltas.items():
            rank = d.rank if isinstance(d, LowRank) else None
            size = d.numel if isinstance(d, LowRank) else d.numel()
            components.append(ComponentRecord(stage_index, n, size, rank))
    metrics = metrics or {}
    cards = cards or {}
    tasks = [
        TaskRecord(t, cl.specs.tasks[t].to_dict(), stage_index, metrics.get(t, {}), cards.get(t, {}))
        for t in stage.tasks
    ]
    mods = stage.modalities if stage_index == 0 else stage.new_modalities
    modalities = [
        ModalityRecord(m, cl.specs.modalities[m].kind, cl.specs.modalities[m].to_dict()) for m in mods
    ]
    return components, tasks, modalities


def root_records(
    cl: ContinualFlame, metrics: dict[str, dict] | None = None
) -> tuple[list[ComponentRecord], list[TaskRecord], list[ModalityRecord]]:
    """Registry rows for registering all of `cl` as one root version (a checkpoint brought from
    outside): every stage's components, tasks (each at its cursor) and modalities."""
    components: list[ComponentRecord] = []
    tasks: list[TaskRecord] = []
    modalities: list[ModalityRecord] = []
    for i in range(len(cl.stages)):
        c, t, m = stage_records(cl, i, metrics)
        components += c
        tasks += t
        modalities += m
    return components, tasks, modalities
