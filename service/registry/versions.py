"""Model versions, their lineage, aliases with history, and the capacity check.

Functions take the session explicitly and only flush: the caller's `session_scope` decides what
commits together. `register_version` is crash-safe: blobs are written first, then every row of the
version (and the alias move) goes in under one SAVEPOINT, so a failure leaves no trace of it in the
database, only unreferenced blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.artifacts import ArtifactStore
from service.orm import utcnow
from service.registry.aliases import check_aliasable
from service.registry.errors import AliasNotFound, CapacityExceeded, Conflict
from service.registry.lineage import get_version, lineage_ids
from service.registry.models import VERSION_STATUSES, Alias, AliasHistory, Component, ModelVersion
from service.registry.notify import publish_alias_move
from service.registry.records import (
    VERSION_PATTERN,
    ComponentRecord,
    ModalityRecord,
    TaskRecord,
    check_name,
)
from service.registry.tasks import plan_new_specs

FileSource = bytes | str | os.PathLike[str]
_VERSION_ID = re.compile(VERSION_PATTERN)
_AUTO_ID = re.compile(r"^v(\d+)$")


def list_components(*, session: Session, version: str) -> list[Component]:
    """Every component the version's forward pass is built from (its lineage's), by stage."""
    ids = lineage_ids(session=session, version=version)
    query = select(Component).where(Component.version_id.in_(ids)).order_by(Component.stage, Component.weight)
    return list(session.scalars(query))


def reserved_rank(*, session: Session, version: str | None) -> dict[str, int]:
    """Cumulative low-rank budget already reserved per weight along the version's lineage."""
    totals: dict[str, int] = defaultdict(int)
    if version is not None:
        for c in list_components(session=session, version=version):
            if c.rank is not None:
                totals[c.weight] += c.rank
    return dict(totals)


def check_capacity(
    *, session: Session, parent: str | None, components: Iterable[ComponentRecord], budget: int | None
) -> dict[str, int]:
    """Per-weight cumulative rank if `components` are added to `parent`; CapacityExceeded past `budget`."""
    used = reserved_rank(session=session, version=parent)
    requested: dict[str, int] = defaultdict(int)
    for c in components:
        if c.rank is not None:
            requested[c.weight] += c.rank
    totals = {w: used.get(w, 0) + requested.get(w, 0) for w in used.keys() | requested.keys()}
    if budget is None:
        return totals
    over = {w: (used.get(w, 0), r) for w, r in requested.items() if totals[w] > budget}
    if over:
        worst = sorted(over.items(), key=lambda kv: -sum(kv[1]))[:5]
        detail = "; ".join(f"{w}: {u} reserved + {r} requested = {u + r}" for w, (u, r) in worst)
        raise CapacityExceeded(
            f"stage would exceed the rank budget of {budget} per weight on {len(over)} weight(s) "
            f"({detail}); lower the stage's rank or energy target, or raise FLAME_CAPACITY_RANK_BUDGET",
            over=over,
            budget=budget,
        )
    return totals


def _store_file(store: ArtifactStore, role: str, source: FileSource) -> dict[str, Any]:
    check_name(role, "file role")
    if isinstance(source, bytes | bytearray):
        digest, name, size = store.put_bytes(bytes(source)), role, len(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        digest, name, size = store.put_file(path), path.name, path.stat().st_size
    else:
        raise ValueError(f"file {role!r} must be bytes or a path, got {type(source).__name__}")
    return {"role": role, "name": name, "sha256": digest, "size": size}


def manifest_digest(manifest: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON of the ordered file list: equal content, equal digest."""
    canonical = json.dumps(list(manifest), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _next_version_id(session: Session) -> str:
    numbers = [int(m.group(1)) for i in session.scalars(select(ModelVersion.id)) if (m := _AUTO_ID.match(i))]
    return f"v{max(numbers, default=0) + 1}"


def register_version(
    *,
    session: Session,
    store: ArtifactStore,
    parent: str | None,
    files: Mapping[str, FileSource],
    moved_by: str,
    components: Sequence[ComponentRecord] = (),
    tasks: Sequence[TaskRecord] = (),
    modalities: Sequence[ModalityRecord] = (),
    move_alias: str | None = "active",
    reason: str = "",
    version_id: str | None = None,
    rank_budget: int | None = None,
    note: str = "",
    status: str = "ready",
) -> ModelVersion:
    """Store `files` (role -> bytes or path, in order), then add the version with its components,
    new tasks and modalities and move `move_alias` to it, all in one SAVEPOINT. A `candidate`
    (a version the promotion gate held back) is stored the same way and can never be aliased."""
    if status not in VERSION_STATUSES:
        raise ValueError(f"status must be one of {list(VERSION_STATUSES)}, got {status!r}")
    if not files:
        raise ValueError("files must name at least one artifact (role -> bytes or path)")
    if not moved_by:
        raise ValueError("moved_by must name who registers the version")
    if version_id is not None and not _VERSION_ID.match(version_id):
        raise ValueError(f"version_id must be 1-32 letters, digits, '_', '.' or '-', got {version_id!r}")
    if parent is not None:
        get_version(session=session, version=parent)
    # Everything that can be refused is refused before a single blob is written.
    check_capacity(session=session, parent=parent, components=components, budget=rank_budget)
    new_modalities, new_tasks = plan_new_specs(
        session=session,
        visible=lineage_ids(session=session, version=parent),
        tasks=tasks,
        modalities=modalities,
    )
    if version_id is not None and session.get(ModelVersion, version_id) is not None:
        raise Conflict(f"model version {version_id!r} already exists", field="version_id")

    manifest = [_store_file(store, role, source) for role, source in files.items()]

    try:
        with session.begin_nested():
            vid = version_id or _next_version_id(session)
            version = ModelVersion(
                id=vid,
                parent_id=parent,
                status=status,
                digest=manifest_digest(manifest),
                manifest=manifest,
                created_by=moved_by,
                note=note,
            )
            session.add(version)
            session.flush()
            session.add_all(
                Component(
                    version_id=vid,
                    stage=c.stage,
                    weight=c.weight,
                    rank=c.rank,
                    n_params=c.n_params,
                    sha256=c.sha256,
                )
                for c in components
            )
            session.add_all(m.to_row(vid) for m in new_modalities)
            session.add_all(t.to_row(vid) for t in new_tasks)
            session.flush()
            if move_alias is not None:
                move_alias_to(
                    session=session, alias=move_alias, version=vid, moved_by=moved_by, reason=reason
                )
    except IntegrityError as e:
        raise Conflict(
            f"could not register model version {version_id or '(next id)'}: it clashes with "
            f"a concurrent registration ({e.orig})",
            field="version_id",
        ) from e
    return version


def resolve_alias(*, session: Session, alias: str = "active") -> ModelVersion:
    row = session.get(Alias, alias)
    if row is None:
        raise AliasNotFound(f"alias {alias!r} does not point at any model version yet", field="alias")
    return get_version(session=session, version=row.version_id)


def list_aliases(*, session: Session) -> dict[str, str]:
    return {a.name: a.version_id for a in session.scalars(select(Alias).order_by(Alias.name))}


def move_alias_to(
    *, session: Session, alias: str, version: str, moved_by: str, reason: str = "", create: bool = True
) -> Alias:
    """Point `alias` at `version` and record who moved it from where; a no-op if it already does.
    With `create=False` an alias that does not exist yet is AliasNotFound, not a new alias."""
    check_name(alias, "alias")
    check_aliasable(session=session, version=version, moved_by=moved_by)
    row = session.scalars(select(Alias).where(Alias.name == alias).with_for_update()).one_or_none()
    if row is None and not create:
        raise AliasNotFound(f"alias {alias!r} does not exist, so it cannot be moved", field="alias")
    previous = row.version_id if row is not None else None
    if previous == version:
        return row  # type: ignore[return-value]
    if row is None:
        row = Alias(name=alias, version_id=version)
        session.add(row)
    else:
        row.version_id = version
        row.updated_at = utcnow()
    session.add(
        AliasHistory(alias=alias, from_version=previous, to_version=version, moved_by=moved_by, reason=reason)
    )
    session.flush()
    publish_alias_move(session=session, alias=alias, version=version)  # delivered when this commits
    return row


move_alias = move_alias_to  # the name other modules call; `register_version` has a parameter of that name


def alias_history(*, session: Session, alias: str, limit: int = 100) -> list[AliasHistory]:
    """Moves of `alias`, newest first."""
    query = (
        select(AliasHistory)
        .where(AliasHistory.alias == alias)
        .order_by(AliasHistory.moved_at.desc(), AliasHistory.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def retire_version(*, session: Session, version: str) -> ModelVersion:
    """Mark a version unusable for new aliases; refused while an alias still points at it."""
    row = get_version(session=session, version=version)
    held = [a for a, v in list_aliases(session=session).items() if v == version]
    if held:
        raise Conflict(f"model version {version!r} is still aliased as {held}; move those aliases first")
    row.status = "retired"
    session.flush()
    return row
