"""Routes: `POST /tasks` (enqueue a stage) and the jobs it makes: list, read, cancel.

The registry's read routes (`GET /tasks`, `/models...`) are in `service.registry.router`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query

from service.deps import JobQueueDep, SessionDep, SettingsDep, require_caller
from service.jobs import service
from service.jobs.queue import QueueFull, commit_and_enqueue, has_room
from service.jobs.schemas import STAGE_EXAMPLES, JobAccepted, JobOut, JobPage, StageRequest
from service.openapi import errors
from service.registry import service as registry
from service.registry.records import ID_PATTERN

router = APIRouter(tags=["jobs"])
TrainCaller = Annotated[str, Depends(require_caller("train"))]
JobId = Annotated[str, Path(pattern=ID_PATTERN)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
StageBody = Annotated[StageRequest, Body(openapi_examples=STAGE_EXAMPLES)]
MAX_OFFSET = 10**9  # past any job count; a larger integer would overflow the database's (fuzz found 3e21)
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


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
    if new:
        commit_and_enqueue(job.id, session=session, settings=settings, local=job_queue)
    else:
        session.commit()
    return {"job_id": job.id, "state": "queued" if new else job.state}


@router.get("/jobs", response_model=JobPage, responses=errors(422))
def list_jobs(
    session: SessionDep,
    _: TrainCaller,
    state: JobState | None = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    created_by: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
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
