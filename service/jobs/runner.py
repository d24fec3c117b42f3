"""How every job runs, whatever its kind: claim it (one attempt at a time), hold its lease (heartbeats,
progress, cancellation, shutdown) while the kind's work runs, and record how the attempt ended.

`run_claimed(job_id, work)` calls `work(lease, request, attempt)` with the job's stored request; a
stage returns its new version id, batch scoring None. Whatever `work` raises becomes the job's state:
cancelled, handed back to the queue (shutdown), left alone (the lease passed to another attempt) or
failed with the error shown to the client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.jobs.lease import Lease, ShuttingDown
from service.orm import utcnow
from service.registry import service as registry
from service.registry.errors import Conflict, JobCancelled, LeaseLost
from service.settings import Settings

log = logging.getLogger("service.jobs")
Work = Callable[[Lease, dict[str, Any], int], str | None]


def run_claimed(
    job_id: str,
    work: Work,
    *,
    session_factory: sessionmaker[Session],
    settings: Settings,
    stop: threading.Event | None = None,
) -> str | None:
    """Claim `job_id` and run `work` under its lease; the job's result version (None otherwise)."""
    stale_before = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s)
    with session_scope(session_factory) as session:
        job, claimed = registry.claim_job(
            session=session, job_id=job_id, stale_before=stale_before, max_attempts=settings.job_max_attempts
        )
        if not claimed:
            return job.result_version if job.state == "succeeded" else None
        raw_request, attempt = dict(job.request), job.attempts
    lease = Lease(
        job_id=job_id,
        attempt=attempt,
        session_factory=session_factory,
        interval_s=settings.job_heartbeat_interval_s,
        stop=stop,
    )
    try:
        with lease:
            result = work(lease, raw_request, attempt)
        return result
    except JobCancelled:
        end(session_factory, job_id, "cancelled", registry.mark_cancelled, attempt=attempt)
    except ShuttingDown:
        end(session_factory, job_id, "released", registry.release, attempt=attempt)
    except LeaseLost as e:
        log.warning("job %s: attempt %d stops without writing: %s", job_id, attempt, e.message)
    except Exception as e:  # noqa: BLE001 - every failure becomes the job's error, shown to the client
        log.exception("job %s failed", job_id)
        message = f"{type(e).__name__}: {e}"
        end(session_factory, job_id, "failed", registry.mark_failed, attempt=attempt, error=message)
    return None


def end(session_factory, job_id: str, state: str, record, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
    """Record how the attempt ended, unless the job moved on without it (another attempt holds it).
    Job metrics come from these rows (service/registry_metrics.py), so nothing is counted here."""
    try:
        with session_scope(session_factory) as session:
            record(session=session, job_id=job_id, **kwargs)
    except Conflict as e:
        log.warning("job %s: not recorded as %s: %s", job_id, state, e.message)
