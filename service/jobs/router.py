"""Routes: `POST /tasks` (enqueue a stage), jobs, tasks, and model versions with rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query
from fastapi.responses import JSONResponse

from flame_core.specs import SpecError
from service.jobs import service
from service.jobs.deps import SessionDep, SessionFactoryDep, SettingsDep, StoreDep, require_scope
from service.jobs.queue import QueueFull, enqueue, has_room
from service.jobs.responses import error_response
from service.jobs.schemas import (
    ACTIVATE_EXAMPLES,
    STAGE_EXAMPLES,
    ActivateOut,
    ActivateRequest,
    JobAccepted,
    JobOut,
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
_NO_VERSION = (
    "No version is active yet, or `version` is unknown (codes `alias_not_found`, `version_not_found`)."
)


def _busy(retry_after: int) -> JSONResponse:
    return error_response(
        503,
        "queue_full",
        "the training queue is full; retry later",
        headers={"Retry-After": str(retry_after)},
    )


@router.post(
    "/tasks",
    status_code=202,
    response_model=JobAccepted,
    responses=errors(
        400,
        404,
        409,
        422,
        503,
        notes={
            404: "A dataset id is unknown, or no version is active yet.",
            409: "The Idempotency-Key was used for a different request.",
            503: "The training queue is full (code `queue_full`).",
        },
    ),
)
def submit_task(
    body: StageBody,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    factory: SessionFactoryDep,
    caller: TrainCaller,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Enqueue a continual stage for new tasks; the same Idempotency-Key answers with the first job."""
    try:
        job, new = service.submit_stage(
            session=session, request=body, idempotency_key=idempotency_key, created_by=caller
        )
    except SpecError as e:
        return error_response(422, "spec_invalid", e.message, e.field)
    if new and not has_room(settings):
        session.rollback()
        return _busy(30)
    session.commit()
    if new:
        try:
            enqueue(job.id, settings=settings, session_factory=factory, store=store)
        except QueueFull as e:
            registry.mark_failed(session=session, job_id=job.id, error=e.message)
            session.commit()
            return _busy(e.retry_after)
    return {"job_id": job.id, "state": "queued" if new else job.state}


@router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(404, 422))
def get_job(job_id: JobId, session: SessionDep, _: TrainCaller) -> Any:
    return service.job_out(registry.get_job(session=session, job_id=job_id))


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
        400,
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
    version: VersionPath, session: SessionDep, caller: AdminCaller, body: ActivateBody = None
) -> Any:
    """Move `active` (or `body.alias`) to `version`: rollback or roll-forward, recorded in its history."""
    body = body or ActivateRequest()
    out = service.activate(
        session=session, version=version, alias=body.alias, moved_by=caller, reason=body.reason or "activate"
    )
    session.commit()
    return out
