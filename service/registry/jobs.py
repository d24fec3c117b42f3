"""Training jobs: queued -> running -> succeeded | failed | cancelled, with idempotent creation.

A client that retries `POST /tasks` with the same Idempotency-Key gets the job it created the first
time; the same key with a different request is a Conflict (it is a client bug, not a retry).
Who may run a job, and for how long, is `service.registry.leases`; writes of a running attempt that
pass `attempt=` are refused (`LeaseLost`) once the job is no longer that attempt's. Finished jobs
never change.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.jobs.models import FINISHED_JOB_STATES, JOB_STATES, Job
from service.orm import utcnow
from service.registry.errors import Conflict, JobNotFound, LeaseLost
from service.registry.lineage import get_version

MAX_ERROR_CHARS = 8000


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def get_job(*, session: Session, job_id: str, for_update: bool = False) -> Job:
    query = select(Job).where(Job.id == job_id)
    row = session.scalars(query.with_for_update() if for_update else query).one_or_none()
    if row is None:
        raise JobNotFound(f"job {job_id!r} not found", field="job_id")
    return row


def list_jobs(
    *,
    session: Session,
    state: str | None = None,
    kind: str | None = None,
    created_by: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Job]:
    """Newest first (ties by id), optionally of one state, kind and creator; a page of `limit` rows
    from `offset`."""
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be >= 1 and offset >= 0, got {limit} and {offset}")
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    if state is not None:
        if state not in JOB_STATES:
            raise ValueError(f"state must be one of {list(JOB_STATES)}, got {state!r}")
        query = query.where(Job.state == state)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if created_by is not None:
        query = query.where(Job.created_by == created_by)
    return list(session.scalars(query))


def count_jobs_by_state(*, session: Session) -> dict[str, int]:
    """For the `flame_training_jobs{state}` gauge; every state is present, zero when empty."""
    counts = {state: n for state, n in session.execute(select(Job.state, func.count()).group_by(Job.state))}
    return {s: counts.get(s, 0) for s in JOB_STATES}


def create_job(
    *,
    session: Session,
    kind: str,
    request: dict[str, Any],
    idempotency_key: str | None = None,
    parent_version: str | None = None,
    created_by: str | None = None,
) -> Job:
    """A queued job, or the existing one when `idempotency_key` was already used for this request."""
    job, _ = create_or_get_job(
        session=session,
        kind=kind,
        request=request,
        idempotency_key=idempotency_key,
        parent_version=parent_version,
        created_by=created_by,
    )
    return job


def create_or_get_job(
    *,
    session: Session,
    kind: str,
    request: dict[str, Any],
    idempotency_key: str | None = None,
    parent_version: str | None = None,
    created_by: str | None = None,
) -> tuple[Job, bool]:
    """`create_job`, and whether THIS call inserted the row. The unique constraint on the key is the
    arbiter of a race: only the caller that created the job may enqueue it."""
    if not kind or len(kind) > 32:
        raise ValueError(f"kind must be 1-32 characters, got {kind!r}")
    if not isinstance(request, dict):
        raise ValueError(f"request must be a JSON object, got {type(request).__name__}")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ValueError(f"idempotency_key must be 1-255 characters, got {len(idempotency_key)}")
    if parent_version is not None:
        get_version(session=session, version=parent_version)
    if idempotency_key is not None:
        existing = _by_key(session, idempotency_key)
        if existing is not None:
            return _same_request(existing, request), False
    job = Job(
        id=str(uuid.uuid4()),
        kind=kind,
        state="queued",
        idempotency_key=idempotency_key,
        request=request,
        progress={},
        metrics={},
        parent_version=parent_version,
        created_by=created_by,
    )
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        # A concurrent request with the same key won the race; answer with its job.
        existing = _by_key(session, idempotency_key) if idempotency_key is not None else None
        if existing is None:
            raise
        return _same_request(existing, request), False
    return job, True


def _by_key(session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()


def _same_request(job: Job, request: dict[str, Any]) -> Job:
    if _canonical(job.request) != _canonical(request):
        raise Conflict(
            f"Idempotency-Key {job.idempotency_key!r} was already used for a different request "
            f"(job {job.id})",
            field="idempotency_key",
        )
    return job


def mark_running(*, session: Session, job_id: str) -> Job:
    job = get_job(session=session, job_id=job_id, for_update=True)
    if job.state not in ("queued", "running"):
        raise Conflict(f"job {job_id} is {job.state}; it cannot run again", field="state")
    job.state = "running"
    job.attempts += 1
    job.started_at = job.started_at or utcnow()
    job.heartbeat_at = utcnow()
    session.flush()
    return job


def _check_attempt(job: Job, attempt: int | None) -> None:
    if attempt is not None and (job.state != "running" or job.attempts != attempt):
        raise LeaseLost(
            f"job {job.id} is {job.state} at attempt {job.attempts}; attempt {attempt} no longer holds it",
            field="state",
        )


def set_parent(*, session: Session, job_id: str, version: str) -> Job:
    """Record the version a running stage stacks on (resolved when it starts, not at submit)."""
    job = get_job(session=session, job_id=job_id, for_update=True)
    if job.state != "running":
        raise Conflict(f"job {job_id} is {job.state}; only a running job takes a parent", field="state")
    get_version(session=session, version=version)
    job.parent_version = version
    session.flush()
    return job


def update_progress(
    *, session: Session, job_id: str, progress: dict[str, Any], attempt: int | None = None
) -> Job:
    """Merge `progress` (e.g. {"epoch": 3, "of": 10, "loss": 0.41}) into the running job's progress;
    a report is also a heartbeat. With `attempt`, LeaseLost unless that attempt still holds the job."""
    job = get_job(session=session, job_id=job_id, for_update=True)
    _check_attempt(job, attempt)
    if job.state != "running":
        raise Conflict(f"job {job_id} is {job.state}; only a running job reports progress", field="state")
    job.progress = {**job.progress, **progress}  # a new dict, so the JSON column is marked dirty
    job.heartbeat_at = utcnow()
    session.flush()
    return job


def mark_succeeded(
    *, session: Session, job_id: str, result_version: str | None = None, metrics: dict[str, Any] | None = None
) -> Job:
    job = get_job(session=session, job_id=job_id, for_update=True)
    if job.state != "running":
        raise Conflict(f"job {job_id} is {job.state}; only a running job can succeed", field="state")
    if result_version is not None:
        get_version(session=session, version=result_version)
    job.state = "succeeded"
    job.result_version = result_version
    job.metrics = dict(metrics or {})
    job.finished_at = utcnow()
    job.heartbeat_at = None
    session.flush()
    return job


def mark_failed(*, session: Session, job_id: str, error: str, attempt: int | None = None) -> Job:
    """Record the failure; `error` is shown to the client, so it must not carry patient data. With
    `attempt`, only while that attempt holds the job (a given-up attempt cannot fail its successor)."""
    job = get_job(session=session, job_id=job_id, for_update=True)
    _check_attempt(job, attempt)
    if job.state in FINISHED_JOB_STATES:
        raise Conflict(f"job {job_id} already {job.state}", field="state")
    job.state = "failed"
    job.error = error[:MAX_ERROR_CHARS]
    job.finished_at = utcnow()
    job.heartbeat_at = None
    session.flush()
    return job
