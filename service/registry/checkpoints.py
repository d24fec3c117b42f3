"""Bring your own model: a checkpoint directory becomes a root version of the registry.

`flame train` writes `config.json` + `model.safetensors` (a plain `Flame`); `flame continual` writes
the same two files for a ContinualFlame under `DIR/model/`. Both are verified by
`flame_core.verify.load_verified` (safetensors only, strict names and shapes, finite values, valid
specs and training ranges) before anything is stored. The version stores the registry's own files
(`manifest`, `weights`: see `service.versioning`) and the two files as brought (`source-config`,
`source-weights`), so their sha256 digests are on record. Blobs are written before the one
transaction that adds the version (and moves `active`); a failure in that transaction can leave
unreferenced, content-addressed blobs behind, never a version row or an alias move.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from flame_core.verify import CONFIG, WEIGHTS, CheckpointInvalid, checkpoint_metrics, load_verified
from service.artifacts import ArtifactStore
from service.registry.models import ModelVersion
from service.registry.versions import FileSource, register_version
from service.versioning import root_records, version_files

SOURCE_ROLES = {CONFIG: "source-config", WEIGHTS: "source-weights"}
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


@dataclass
class Registered:
    version: ModelVersion
    activated: bool
    warnings: list[str] = field(default_factory=list)


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory at `path`: `path` itself (`flame train --out`, `flame continual`'s
    `DIR/model`) or `path/model` (`flame continual --out DIR`). CheckpointInvalid names what is
    missing, and refuses pickled checkpoints by name."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointInvalid(f"{root} is not a directory", file=str(root), field="directory")
    for candidate in (root, root / "model"):
        if (candidate / CONFIG).is_file():
            if not (candidate / WEIGHTS).is_file():
                raise CheckpointInvalid(
                    f"missing from {candidate}{_pickle_hint(candidate)}", file=WEIGHTS, field=WEIGHTS
                )
            return candidate
    raise CheckpointInvalid(
        f"missing from {root} and {root / 'model'}: not a directory written by `flame train` or "
        f"`flame continual`{_pickle_hint(root)}",
        file=CONFIG,
        field=CONFIG,
    )


def _pickle_hint(directory: Path) -> str:
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if not pickles:
        return ""
    return f" (found {', '.join(pickles[:3])}: pickled checkpoints are never loaded; save with safetensors)"


def register_checkpoint(
    *,
    session: Session,
    store: ArtifactStore,
    directory: str | Path,
    moved_by: str,
    activate: bool = True,
    note: str = "",
    rank_budget: int | None = None,
) -> Registered:
    """Verify the checkpoint in `directory` (see `checkpoint_dir`) and add it as a root version with
    its tasks, cursors, modalities and metrics; `active` moves to it when `activate`. Only flushes."""
    src = checkpoint_dir(directory)
    cl, extra = load_verified(src)
    tasks = list(cl.cursor)
    try:
        components, task_rows, modalities = root_records(cl, checkpoint_metrics(extra, tasks))
    except ValueError as e:  # a name the registry cannot hold (e.g. longer than 64 characters)
        raise CheckpointInvalid(str(e), file=CONFIG, field="specs") from None
    files: dict[str, FileSource] = dict(version_files(cl))
    files.update({role: src / name for name, role in SOURCE_ROLES.items()})
    version = register_version(
        session=session,
        store=store,
        parent=None,
        files=files,
        moved_by=moved_by,
        components=components,
        tasks=task_rows,
        modalities=modalities,
        move_alias="active" if activate else None,
        reason="register",
        rank_budget=rank_budget,
        note=note or f"registered from a {'continual' if len(cl.stages) > 1 else 'plain'} checkpoint",
    )
    warnings = []
    unranged = [t for t in tasks if t not in cl.training_ranges]
    if unranged:
        warnings.append(
            f"no training ranges for {unranged}: their predictions cannot name values outside the "
            "training data (retrain with a current `flame train` to record them)"
        )
    return Registered(version, activate, warnings)


def register_upload(
    *, session: Session, store: ArtifactStore, config: BinaryIO, weights: BinaryIO, **options: Any
) -> Registered:
    """`register_checkpoint` for the two files uploaded as streams (`POST /models`): they are copied
    into a private temporary directory under their checkpoint names, checked, stored, then removed."""
    with tempfile.TemporaryDirectory(prefix="flame-upload-") as tmp:
        for name, stream in ((CONFIG, config), (WEIGHTS, weights)):
            with open(Path(tmp) / name, "wb") as f:
                shutil.copyfileobj(stream, f, length=1024 * 1024)
        return register_checkpoint(session=session, store=store, directory=tmp, **options)
