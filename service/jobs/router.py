"""Routes: `POST /tasks` (enqueue a stage), jobs, tasks, and model versions with rollback."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query

from service.jobs import service
from service.jobs.deps import (
    JobQueueDep,
    OptionalHostDep,
    SessionDep,
    SettingsDep,
    require_scope,
)
from service.jobs.queue import QueueFull, enqueue, has_room
from service.jobs.schemas import (
    ACTIVATE_EXAMPLES,
    STAGE_EXAMPLES,
    ActivateOut,
    ActivateRequest,
    JobAccepted,
    JobOut,
    JobPage,
    StageRequest,
    TaskOut,
    VersionDetail,
    VersionOut,
)
from service.openapi import errors
from service.registry import service as registry
from service.registry.records import ID_PATTERN, NAME_PATTERN, VERSION_PATTERN

router = APIRouter(tags=["jobs"])
TrainCaller = Annotated[str, Depends(require_scope("train"))]
AdminCaller = Annotated[str, Depends(require_scope("admin"))]
VersionQuery = Annotated[
    str | None, Query(pattern=VERSION_PATTERN, description="a model version (default: the active one)")
]
VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN, examples=["v1"])]
TaskName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["mortality"])]
JobId = Annotated[str, Path(pattern=ID_PATTERN)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
StageBody = Annotated[StageRequest, Body(openapi_examples=STAGE_EXAMPLES)]
ActivateBody = Annotated[ActivateRequest | None, Body(openapi_examples=ACTIVATE_EXAMPLES)]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
_NO_VERSION = (
    "No version is active yet, or `version` is unknown (codes `alias_not_found`, `version_not_found`)."
)


@router.post(
    "/tasks",
    status_code=202,
    response_model=JobAccepted,
    responses=errors(
        404,
        409,
        422,
        503,
        notes={
            404: "A dataset id is unknown, or no version is active yet.",
            409: "The Idempotency-Key was used for a different request, or a task of the request is "
            "already served or being added by another job (code `task_exists`).",
            422: "The task specs, options or datasets cannot make this stage (codes `request_invalid`, "
            "`spec_invalid`, `dataset_unsuitable` naming `datasets.<split>`).",
            503: "The training queue is full (code `queue_full`).",
        },
    ),
)
def submit_task(
    body: StageBody,
    session: SessionDep,
    settings: SettingsDep,
    job_queue: JobQueueDep,
    caller: TrainCaller,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Enqueue a continual stage for new tasks; the same Idempotency-Key answers with the first job."""
    job, new = service.submit_stage(
        session=session, request=body, idempotency_key=idempotency_key, created_by=caller
    )
    if new and not has_room(settings, job_queue):
        session.rollback()
        raise QueueFull("the training queue is full; retry later")
    session.commit()
    if new:
        try:
            enqueue(job.id, settings=settings, local=job_queue)
        except QueueFull as e:
            registry.mark_failed(session=session, job_id=job.id, error=e.message)
            session.commit()
            raise
    return {"job_id": job.id, "state": "queued" if new else job.state}


@router.get("/jobs", response_model=JobPage, responses=errors(422))
def list_jobs(
    session: SessionDep,
    _: TrainCaller,
    state: JobState | None = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    created_by: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    """Jobs newest first, filtered by state, kind and creator; page on with `next_offset`."""
    return service.list_jobs_page(
        session=session, state=state, kind=kind, created_by=created_by, limit=limit, offset=offset
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(404, 422))
def get_job(job_id: JobId, session: SessionDep, _: TrainCaller) -> Any:
    return service.job_out(registry.get_job(session=session, job_id=job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses=errors(404, 409, 422, notes={409: "The job already succeeded or failed."}),
)
def cancel_job(job_id: JobId, session: SessionDep, caller: TrainCaller) -> Any:
    """Cancel a queued job at once; a running one stops at its next epoch (`cancel_requested` until
    then) and registers nothing. A succeeded or failed job is a 409."""
    job = registry.request_cancel(session=session, job_id=job_id, by=caller)
    session.commit()
    return service.job_out(job)


def _version(session: Any, version: str | None) -> str:
    return version or registry.resolve_alias(session=session, alias="active").id


@router.get("/tasks", response_model=list[TaskOut], responses=errors(404, 422, notes={404: _NO_VERSION}))
def list_tasks(session: SessionDep, _: TrainCaller, version: VersionQuery = None) -> Any:
    """Tasks the version (default: active) serves, in the order they were introduced."""
    rows = registry.list_tasks(session=session, version=_version(session, version))
    return [service.task_out(t) for t in rows]


@router.get("/tasks/{name}", response_model=TaskOut, responses=errors(404, 422))
def get_task(name: TaskName, session: SessionDep, _: TrainCaller, version: VersionQuery = None) -> Any:
    return service.task_out(registry.get_task(session=session, name=name, version=_version(session, version)))


@router.get("/models", response_model=list[VersionOut])
def list_models(session: SessionDep, _: TrainCaller) -> Any:
    return service.list_versions_out(session=session)


@router.get("/models/{version}", response_model=VersionDetail, responses=errors(404, 422))
def get_model(version: VersionPath, session: SessionDep, _: TrainCaller) -> Any:
    return service.version_detail(session=session, version=version)


@router.post(
    "/models/{version}/activate",
    response_model=ActivateOut,
    responses=errors(
        404,
        409,
        422,
        notes={
            404: "The version, or an alias other than `active`, does not exist.",
            409: "The version is not `ready` (only ready versions can be aliased).",
        },
    ),
)
def activate_model(
    version: VersionPath,
    session: SessionDep,
    caller: AdminCaller,
    host: OptionalHostDep,
    body: ActivateBody = None,
) -> Any:
    """Move `active` (or `body.alias`) to `version`: rollback or roll-forward, recorded in its history.
    The replica that answers serves the alias's version before it answers; the others hear of the
    move at once (PostgreSQL NOTIFY) or at their next poll."""
    body = body or ActivateRequest()
    out = service.activate(
        session=session, version=version, alias=body.alias, moved_by=caller, reason=body.reason or "activate"
    )
    session.commit()
    if host is not None:
        if body.alias == host.alias:
            host.reload_if_changed()
        out["serving"] = host.current.id if host.current is not None else None
    return out
