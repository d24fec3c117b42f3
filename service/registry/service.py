"""The registry's service API in one place: keyword-only functions that take the session explicitly.

    from service.registry import service as registry
    with session_scope(factory) as session:
        version = registry.register_version(session=session, store=store, parent="v1", files=..., ...)
        registry.mark_succeeded(session=session, job_id=job.id, result_version=version.id)

Functions flush but never commit, so one `session_scope` can commit several of them together.
Below the re-exports: what the `/models` and `/tasks` read routes (and `flame models`) answer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.registry.aliases import swap_alias
from service.registry.audit import list_predictions, record_prediction
from service.registry.datasets import create_dataset, find_dataset, get_dataset, list_datasets
from service.registry.errors import AliasNotFound
from service.registry.jobs import (
    count_jobs_by_state,
    create_job,
    create_or_get_job,
    get_job,
    list_jobs,
    mark_failed,
    mark_running,
    mark_succeeded,
    set_parent,
    update_progress,
)
from service.registry.leases import (
    claim_job,
    heartbeat,
    hold_lease,
    mark_cancelled,
    release,
    request_cancel,
    requeue_stale,
    stale_jobs,
    unfinished_jobs,
)
from service.registry.lineage import get_version, lineage, lineage_ids, list_versions
from service.registry.models import ModelVersion, Task
from service.registry.records import ComponentRecord, ModalityRecord, TaskRecord
from service.registry.tasks import get_task, list_modalities, list_tasks, update_model_card
from service.registry.versions import (
    alias_history,
    check_capacity,
    list_aliases,
    list_components,
    manifest_digest,
    move_alias,
    register_version,
    reserved_rank,
    resolve_alias,
    retire_version,
)

__all__ = [
    "ACTIVE_ALIAS",
    "ComponentRecord",
    "ModalityRecord",
    "TaskRecord",
    "activate",
    "alias_history",
    "check_capacity",
    "claim_job",
    "count_jobs_by_state",
    "create_dataset",
    "create_job",
    "create_or_get_job",
    "find_dataset",
    "get_dataset",
    "get_job",
    "get_task",
    "get_version",
    "heartbeat",
    "hold_lease",
    "lineage",
    "lineage_ids",
    "list_aliases",
    "list_components",
    "list_datasets",
    "list_jobs",
    "list_modalities",
    "list_predictions",
    "list_tasks",
    "list_versions_out",
    "list_versions",
    "manifest_digest",
    "mark_cancelled",
    "mark_failed",
    "mark_running",
    "mark_succeeded",
    "move_alias",
    "record_prediction",
    "register_version",
    "release",
    "request_cancel",
    "requeue_stale",
    "reserved_rank",
    "resolve_alias",
    "retire_version",
    "set_parent",
    "stale_jobs",
    "swap_alias",
    "task_out",
    "unfinished_jobs",
    "update_model_card",
    "version_or_active",
    "update_progress",
    "version_detail",
    "version_out",
]

ACTIVE_ALIAS = "active"


def version_or_active(*, session: Session, version: str | None) -> str:
    """`version`, or the version `active` points at when none is given."""
    return version or resolve_alias(session=session, alias=ACTIVE_ALIAS).id


def task_out(task: Task) -> dict[str, Any]:
    return {
        "name": task.name,
        "spec": task.spec,
        "cursor": task.cursor,
        "introduced_in": task.version_id,
        "metrics": task.metrics,
        "model_card": task.model_card,
    }


def _aliases_of(session: Session) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for alias, version in list_aliases(session=session).items():
        held.setdefault(version, []).append(alias)
    return held


def _introduced(session: Session, version: str) -> list[str]:
    ids = lineage_ids(session=session, version=version)
    parent_ids = ids[:-1]
    served = list_tasks(session=session, version=version)
    return [t.name for t in served if t.version_id not in parent_ids]


def version_out(session: Session, v: ModelVersion, aliases: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "version": v.id,
        "parent": v.parent_id,
        "status": v.status,
        "digest": v.digest,
        "created_by": v.created_by,
        "created_at": v.created_at,
        "note": v.note,
        "aliases": aliases.get(v.id, []),
        "tasks_introduced": _introduced(session, v.id),
    }


def list_versions_out(*, session: Session) -> list[dict[str, Any]]:
    aliases = _aliases_of(session)
    return [version_out(session, v, aliases) for v in list_versions(session=session)]


def version_detail(*, session: Session, version: str) -> dict[str, Any]:
    v = get_version(session=session, version=version)
    reserved = reserved_rank(session=session, version=version)
    return {
        **version_out(session, v, _aliases_of(session)),
        "lineage": lineage_ids(session=session, version=version),
        "tasks": [t.name for t in list_tasks(session=session, version=version)],
        "files": v.manifest,
        "reserved_rank_max": max(reserved.values(), default=0),
        "n_components": len(list_components(session=session, version=version)),
    }


def activate(*, session: Session, version: str, alias: str, moved_by: str, reason: str) -> dict[str, Any]:
    """Point `alias` at `version` (a rollback or roll-forward); the move is recorded in its history.
    Only `active` may come into being here: any other alias must exist already (AliasNotFound)."""
    try:
        previous: str | None = resolve_alias(session=session, alias=alias).id
    except AliasNotFound:
        previous = None
    move_alias(
        session=session,
        alias=alias,
        version=version,
        moved_by=moved_by,
        reason=reason,
        create=alias == ACTIVE_ALIAS,
    )
    history = [
        {
            "alias": h.alias,
            "from_version": h.from_version,
            "to_version": h.to_version,
            "moved_by": h.moved_by,
            "reason": h.reason,
            "moved_at": h.moved_at,
        }
        for h in alias_history(session=session, alias=alias, limit=20)
    ]
    return {"alias": alias, "version": version, "previous": previous, "history": history}
