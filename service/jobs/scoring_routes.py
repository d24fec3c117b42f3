"""`POST /predictions/batch` (score a stored dataset with a task, as a job) and
`GET /predictions/batch/{job_id}` (its JSON-lines file, once the job succeeded)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path
from fastapi.responses import Response

from service.deps import JobQueueDep, SessionDep, SettingsDep, StoreDep, require_caller
from service.jobs.queue import QueueFull, commit_and_enqueue, has_room
from service.jobs.schemas import JobAccepted
from service.jobs.scoring import SCORING_KIND, ScoringRequest, submit_scoring
from service.openapi import errors
from service.registry import service as registry
from service.registry.errors import Conflict, JobNotFound
from service.registry.records import ID_PATTERN

router = APIRouter(tags=["jobs"])
PredictCaller = Annotated[str, Depends(require_caller("predict"))]
JobId = Annotated[str, Path(pattern=ID_PATTERN)]
_EXAMPLES = {
    "cohort": {
        "summary": "score an uploaded cohort with mortality on the active version",
        "value": {"dataset_id": "3f2b8c1e-0d7a-4c55-9f0e-8a1d2b3c4d5e", "task": "mortality"},
    }
}


@router.post(
    "/predictions/batch",
    status_code=202,
    response_model=JobAccepted,
    responses=errors(404, 422, 503, notes={404: "The dataset, task or version is unknown."}),
)
def submit_batch(
    body: Annotated[ScoringRequest, Body(openapi_examples=_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    job_queue: JobQueueDep,
    caller: PredictCaller,
) -> Any:
    """Score every sample of a stored dataset with one task; follow it at `GET /jobs/{job_id}`."""
    job = submit_scoring(session=session, request=body, created_by=caller)
    if not has_room(settings, job_queue):
        session.rollback()
        raise QueueFull("the job queue is full; retry later")
    commit_and_enqueue(job.id, session=session, settings=settings, local=job_queue)
    return {"job_id": job.id, "state": "queued"}


@router.get(
    "/predictions/batch/{job_id}",
    responses={
        **errors(404, 409, 422, notes={409: "The job has not succeeded (yet)."}),
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "description": "one line per sample",
        },
    },
    response_class=Response,
)
def download_batch(job_id: JobId, session: SessionDep, store: StoreDep, _: PredictCaller) -> Response:
    """The scoring job's predictions: one JSON line per sample of the dataset, in order."""
    job = registry.get_job(session=session, job_id=job_id)
    if job.kind != SCORING_KIND:
        raise JobNotFound(f"job {job_id} is not a batch-scoring job", field="job_id")
    if job.state != "succeeded":
        raise Conflict(f"job {job_id} is {job.state}; its file exists once it succeeded", field="state")
    return Response(store.read_bytes(job.metrics["artifact_sha256"]), media_type="application/x-ndjson")
