"""What the jobs routes do, as keyword-only functions taking the session.

`submit_stage` checks everything a client can fix before a job exists (specs, dataset ids, task
names against the active model and pending jobs, each new task's labels and modalities in the
datasets' summaries, `min_metric` names) so that most mistakes are a 4xx now, not a failed job later.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flame_core.specs import SpecSet
from service.datasets.service import check_stage_data
from service.errors import PayloadInvalid
from service.jobs.models import Job
from service.jobs.schemas import HEAD_METRICS, StageRequest
from service.jobs.specs import stage_specs, version_specs
from service.jobs.stage_lock import lock_submissions
from service.registry import service as registry
from service.registry.errors import TaskExists

STAGE_KIND = "stage"


def submit_stage(
    *, session: Session, request: StageRequest, idempotency_key: str | None, created_by: str | None
) -> tuple[Job, bool]:
    """The queued job for `request` (or the earlier job for the same Idempotency-Key) and whether it
    is new. Raises SpecError / DatasetUnsuitable / PayloadInvalid (422), DatasetNotFound /
    AliasNotFound (404), TaskExists / Conflict (409). The job's parent is resolved when it starts."""
    # Submissions take turns from here to the commit: two of one new task cannot both pass the checks
    # below, and a retry under the same key finds the job its twin just created.
    lock_submissions(session)
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
    active = registry.resolve_alias(session=session, alias="active")
    served = version_specs(session=session, version=active.id)
    _refuse_known_tasks(session, request, served, active.id)
    new = stage_specs(served, request.spec_dict())
    _refuse_unreported_metrics(request, new)
    for split in ("train", "validation", "test"):
        dataset_id = getattr(request.datasets, split)
        if dataset_id is not None:
            dataset = registry.get_dataset(session=session, dataset_id=dataset_id)
            check_stage_data(dataset=dataset, split=split, specs=new)
    # Two requests with one key can both get here; the loser of the insert gets the winner's job
    # and `new` False, so the job is enqueued once.
    return registry.create_or_get_job(
        session=session,
        kind=STAGE_KIND,
        request=request.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        created_by=created_by,
    )


def _refuse_known_tasks(session: Session, request: StageRequest, served: SpecSet, active: str) -> None:
    """TaskExists (409) for a task the active model serves or a queued/running stage already adds:
    the second stage would fail after its wait (or, worse, race the first)."""
    pending: dict[str, Job] = {}
    query = select(Job).where(Job.kind == STAGE_KIND, Job.state.in_(("queued", "running")))
    for job in session.scalars(query.order_by(Job.created_at)):
        for task in job.request.get("tasks") or []:
            if isinstance(task, dict) and isinstance(task.get("name"), str):
                pending.setdefault(task["name"], job)
    for i, task in enumerate(request.tasks):
        name = task.get("name")
        if not isinstance(name, str):
            continue  # stage_specs names what is wrong with it
        if name in served.tasks:
            raise TaskExists(
                f"task {name!r} is already served by the active model version {active!r}; "
                "a stage adds new tasks",
                field=f"tasks[{i}].name",
            )
        if name in pending:
            job = pending[name]
            raise TaskExists(
                f"task {name!r} is already being added by job {job.id} ({job.state}); "
                "wait for it, or choose another name",
                field=f"tasks[{i}].name",
            )


def _refuse_unreported_metrics(request: StageRequest, new: SpecSet) -> None:
    for metric in request.options.min_metric or {}:
        for name, task in new.tasks.items():
            if metric not in HEAD_METRICS[task.head.type]:
                raise PayloadInvalid(
                    f"min_metric names {metric!r}, which a {task.head.type} task ({name!r}) does not "
                    f"report; it reports {list(HEAD_METRICS[task.head.type])}",
                    field=f"options.min_metric.{metric}",
                )


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
        "cancel_requested": job.cancel_requested,
        "created_by": job.created_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "promotion": (job.metrics or {}).get("promotion"),
    }


def list_jobs_page(
    *,
    session: Session,
    state: str | None,
    kind: str | None,
    created_by: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """A page of jobs, newest first; one extra row is read to know whether another page follows."""
    rows = registry.list_jobs(
        session=session, state=state, kind=kind, created_by=created_by, limit=limit + 1, offset=offset
    )
    more = len(rows) > limit
    return {
        "jobs": [job_out(j) for j in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }
