"""What the jobs, tasks and models routes do, as keyword-only functions taking the session.

`submit_stage` checks everything a client can fix before a job exists (specs, dataset ids, task
names against the active model) so that most mistakes are a 4xx now, not a failed job later.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.jobs.schemas import StageRequest
from service.jobs.specs import stage_specs, version_specs
from service.registry import errors as registry_errors
from service.registry import service as registry
from service.registry.models import Job, ModelVersion, Task

STAGE_KIND = "stage"
ACTIVE_ALIAS = "active"


def submit_stage(
    *, session: Session, request: StageRequest, idempotency_key: str | None, created_by: str | None
) -> tuple[Job, bool]:
    """The queued job for `request` (or the earlier job for the same Idempotency-Key) and whether it
    is new. Raises SpecError (422), DatasetNotFound / AliasNotFound (404), Conflict (409)."""
    if idempotency_key is not None:
        existing = session.scalars(select(Job).where(Job.idempotency_key == idempotency_key)).one_or_none()
        if existing is not None:
            job = registry.create_job(
                session=session,
                kind=STAGE_KIND,
                request=request.model_dump(mode="json"),
                idempotency_key=idempotency_key,
            )  # the same job, or Conflict for a different request under the same key
            return job, False
    parent = registry.resolve_alias(session=session, alias="active")
    stage_specs(version_specs(session=session, version=parent.id), request.spec_dict())
    for split in ("train", "validation", "test"):
        dataset_id = getattr(request.datasets, split)
        if dataset_id is not None:
            registry.get_dataset(session=session, dataset_id=dataset_id)
    job = registry.create_job(
        session=session,
        kind=STAGE_KIND,
        request=request.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        parent_version=parent.id,
        created_by=created_by,
    )
    return job, True


def job_out(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "metrics": job.metrics,
        "error": job.error,
        "parent_version": job.parent_version,
        "result_version": job.result_version,
        "attempts": job.attempts,
        "created_by": job.created_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


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
    for alias, version in registry.list_aliases(session=session).items():
        held.setdefault(version, []).append(alias)
    return held


def _introduced(session: Session, version: str) -> list[str]:
    ids = registry.lineage_ids(session=session, version=version)
    parent_ids = ids[:-1]
    served = registry.list_tasks(session=session, version=version)
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
    return [version_out(session, v, aliases) for v in registry.list_versions(session=session)]


def version_detail(*, session: Session, version: str) -> dict[str, Any]:
    v = registry.get_version(session=session, version=version)
    reserved = registry.reserved_rank(session=session, version=version)
    return {
        **version_out(session, v, _aliases_of(session)),
        "lineage": registry.lineage_ids(session=session, version=version),
        "tasks": [t.name for t in registry.list_tasks(session=session, version=version)],
        "files": v.manifest,
        "reserved_rank_max": max(reserved.values(), default=0),
        "n_components": len(registry.list_components(session=session, version=version)),
    }


def activate(*, session: Session, version: str, alias: str, moved_by: str, reason: str) -> dict[str, Any]:
    """Point `alias` at `version` (a rollback or roll-forward); the move is recorded in its history.
    Only `active` may come into being here: any other alias must exist already (AliasNotFound)."""
    try:
        previous: str | None = registry.resolve_alias(session=session, alias=alias).id
    except registry_errors.AliasNotFound:
        previous = None
    registry.move_alias(
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
        for h in registry.alias_history(session=session, alias=alias, limit=20)
    ]
    return {"alias": alias, "version": version, "previous": previous, "history": history}
