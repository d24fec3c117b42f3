"""Job leases: who runs a job now, whether it is still alive, and how it ends if it is not.

A worker *claims* a job (`claim_job`): queued -> running, `attempts` + 1, and the claim's number is
that new `attempts`. While it runs, it touches `heartbeat_at` (progress reports and a background
heartbeat both do). Every write of an attempt is conditional on `state = 'running' AND attempts =
<its number>`, so an attempt that was given up on (re-queued by a reaper, taken over by a redelivery)
can no longer report, fail or register anything: it gets `LeaseLost` and stops.

A reaper re-queues a running job whose heartbeat is older than the timeout, or fails it once it has
had `max_attempts`. Its write is one conditional UPDATE, so with several replicas reaping at once
exactly one wins and enqueues the job again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.jobs.models import FINISHED_JOB_STATES, Job
from service.orm import utcnow
from service.registry.errors import Conflict, JobCancelled, LeaseLost
from service.registry.jobs import MAX_ERROR_CHARS, get_job


def _stale(stale_before: datetime):  # type: ignore[no-untyped-def]
    return or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before)


def gave_up_message(attempts: int) -> str:
    return f"gave up after {attempts} attempts: the worker running the job stopped sending heartbeats"


def claim_job(
    *, session: Session, job_id: str, stale_before: datetime, max_attempts: int
) -> tuple[Job, bool]:
    """The job and whether this call claimed it. A queued job is claimed; so is a running one whose
    heartbeat is older than `stale_before` (its worker died: this delivery takes over), unless it has
    had `max_attempts`, in which case it is failed. A running job with a fresh heartbeat (another
    worker has it) and a finished job are left alone."""
    job = get_job(session=session, job_id=job_id, for_update=True)
    now = utcnow()
    if job.state == "running":
        beat = job.heartbeat_at
        if beat is not None and beat >= stale_before:
            return job, False
        if job.attempts >= max_attempts:
            _finish(job, "failed", gave_up_message(job.attempts))
            session.flush()
            return job, False
    elif job.state != "queued":
        return job, False
    job.state = "running"
    job.attempts += 1
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    session.flush()
    return job, True


def heartbeat(*, session: Session, job_id: str, attempt: int) -> bool:
    """Touch the attempt's heartbeat; False when the job is no longer this attempt's."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.attempts == attempt)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def hold_lease(*, session: Session, job_id: str, attempt: int) -> Job:
    """Lock the job for the rest of the transaction and check the attempt still owns it and nobody
    asked it to stop: the registering transaction calls this first, so one job makes one version."""
    job = _held(session, job_id, attempt)
    if job.cancel_requested:
        raise JobCancelled(f"job {job_id} was cancelled", field="state")
    return job


def stale_jobs(*, session: Session, stale_before: datetime) -> list[tuple[str, int]]:
    """(id, attempts) of running jobs whose heartbeat is older than `stale_before`, oldest first."""
    query = (
        select(Job.id, Job.attempts)
        .where(Job.state == "running", _stale(stale_before))
        .order_by(Job.created_at, Job.id)
    )
    return [(row.id, row.attempts) for row in session.execute(query)]


def requeue_stale(
    *, session: Session, job_id: str, attempt: int, stale_before: datetime, max_attempts: int
) -> Literal["requeued", "failed"] | None:
    """Re-queue (or, at `max_attempts`, fail) a job still running as `attempt` with a stale heartbeat.
    One conditional UPDATE: None when another reaper, a redelivery or the attempt itself got there
    first. The caller enqueues the job again only on "requeued"."""
    gave_up = attempt >= max_attempts
    values = (
        {"state": "failed", "error": gave_up_message(attempt), "finished_at": utcnow(), "heartbeat_at": None}
        if gave_up
        else {"state": "queued", "heartbeat_at": None}
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.attempts == attempt, _stale(stale_before))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return "failed" if gave_up else "requeued"


def release(*, session: Session, job_id: str, attempt: int) -> bool:
    """Hand a running job back to the queue (its process is shutting down); the next claim is the
    next attempt. False when the attempt no longer holds it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.attempts == attempt)
        .values(state="queued", heartbeat_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def unfinished_jobs(*, session: Session, stale_before: datetime) -> list[str]:
    """Jobs an in-process queue should run after a restart: queued ones and running ones whose
    heartbeat is stale (a running job with a fresh heartbeat belongs to a live process)."""
    query = (
        select(Job.id)
        .where(or_(Job.state == "queued", (Job.state == "running") & _stale(stale_before)))
        .order_by(Job.created_at, Job.id)
    )
    return list(session.scalars(query))


def request_cancel(*, session: Session, job_id: str, by: str) -> Job:
    """Cancel a queued job now; ask a running one to stop at its next epoch (`cancel_requested`).
    Cancelling a cancelled job answers it again; a succeeded or failed job is a Conflict."""
    job = get_job(session=session, job_id=job_id, for_update=True)
    if job.state == "queued":
        _finish(job, "cancelled", f"cancelled by {by} before it started")
    elif job.state == "running":
        if not job.cancel_requested:
            job.cancel_requested = True
            job.progress = {**job.progress, "cancel_requested_by": by}
    elif job.state != "cancelled":
        raise Conflict(f"job {job_id} already {job.state}; only queued or running jobs can be cancelled")
    session.flush()
    return job


def mark_cancelled(*, session: Session, job_id: str, attempt: int) -> Job:
    """The attempt stopped on a cancel request; nothing it trained is registered."""
    job = _held(session, job_id, attempt)
    by = job.progress.get("cancel_requested_by", "a client")
    _finish(job, "cancelled", f"cancelled by {by} while running (attempt {attempt})")
    session.flush()
    return job


def _held(session: Session, job_id: str, attempt: int) -> Job:
    job = get_job(session=session, job_id=job_id, for_update=True)
    if job.state != "running" or job.attempts != attempt:
        raise LeaseLost(
            f"job {job_id} is {job.state} at attempt {job.attempts}; attempt {attempt} no longer holds it",
            field="state",
        )
    return job


def _finish(job: Job, state: str, error: str) -> None:
    assert state in FINISHED_JOB_STATES
    job.state = state
    job.error = error[:MAX_ERROR_CHARS]
    job.finished_at = utcnow()
    job.heartbeat_at = None
