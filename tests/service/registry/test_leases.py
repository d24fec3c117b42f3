"""Job leases on both databases: claims, heartbeats, stale re-queues, attempts, cancel requests."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.orm import utcnow
from service.registry import service as registry
from service.registry.errors import Conflict, JobCancelled, LeaseLost

FRESH = timedelta(seconds=-60)  # stale_before a minute ago: every recent heartbeat is fresh
STALE = timedelta(seconds=1)  # stale_before in the future: every heartbeat is stale


def _job(session, **kwargs):  # type: ignore[no-untyped-def]
    return registry.create_job(session=session, kind="stage", request={}, **kwargs)


def _claim(session, job_id, age=FRESH, max_attempts=3):  # type: ignore[no-untyped-def]
    return registry.claim_job(
        session=session, job_id=job_id, stale_before=utcnow() + age, max_attempts=max_attempts
    )


def test_claims_a_queued_job_once_and_takes_over_only_a_stale_one(session):
    job = _job(session)
    claimed, ok = _claim(session, job.id)
    assert ok and claimed.state == "running" and claimed.attempts == 1
    assert claimed.heartbeat_at is not None and claimed.started_at is not None
    _, again = _claim(session, job.id)  # a second delivery while the first worker beats
    assert again is False and registry.get_job(session=session, job_id=job.id).attempts == 1
    taken, ok = _claim(session, job.id, age=STALE)  # the first worker died
    assert ok and taken.attempts == 2 and taken.state == "running"
    # The dead attempt can no longer report, fail, beat or register.
    with pytest.raises(LeaseLost):
        registry.update_progress(session=session, job_id=job.id, progress={"epoch": 1}, attempt=1)
    with pytest.raises(LeaseLost):
        registry.mark_failed(session=session, job_id=job.id, error="boom", attempt=1)
    with pytest.raises(LeaseLost):
        registry.hold_lease(session=session, job_id=job.id, attempt=1)
    assert registry.heartbeat(session=session, job_id=job.id, attempt=1) is False
    assert registry.heartbeat(session=session, job_id=job.id, attempt=2) is True
    registry.update_progress(session=session, job_id=job.id, progress={"epoch": 1}, attempt=2)
    registry.mark_succeeded(session=session, job_id=job.id)
    done, ok = _claim(session, job.id, age=STALE)
    assert ok is False and done.state == "succeeded" and done.heartbeat_at is None


def test_a_stale_job_at_its_last_attempt_is_failed_not_claimed(session):
    job = _job(session)
    for _ in range(2):
        _, ok = _claim(session, job.id, age=STALE, max_attempts=2)
        assert ok
    failed, ok = _claim(session, job.id, age=STALE, max_attempts=2)
    assert ok is False and failed.state == "failed" and failed.attempts == 2
    assert "gave up after 2 attempts" in failed.error and failed.finished_at is not None


def test_requeue_is_conditional_and_counts_toward_the_limit(session):
    job = _job(session)
    _claim(session, job.id)
    fresh = utcnow() + FRESH
    assert registry.stale_jobs(session=session, stale_before=fresh) == []
    kw = {"session": session, "job_id": job.id, "max_attempts": 2}
    assert registry.requeue_stale(attempt=1, stale_before=fresh, **kw) is None  # it still beats
    stale = utcnow() + STALE
    assert registry.stale_jobs(session=session, stale_before=stale) == [(job.id, 1)]
    assert registry.unfinished_jobs(session=session, stale_before=stale) == [job.id]
    assert registry.requeue_stale(attempt=1, stale_before=stale, **kw) == "requeued"
    assert registry.requeue_stale(attempt=1, stale_before=stale, **kw) is None  # a second reaper
    session.expire_all()
    assert registry.get_job(session=session, job_id=job.id).state == "queued"
    _claim(session, job.id)  # attempt 2 starts, then dies too
    assert registry.requeue_stale(attempt=2, stale_before=utcnow() + STALE, **kw) == "failed"
    session.expire_all()
    gave_up = registry.get_job(session=session, job_id=job.id)
    assert gave_up.state == "failed" and "gave up after 2 attempts" in gave_up.error


def test_release_hands_the_job_back_for_the_next_attempt(session):
    job = _job(session)
    _claim(session, job.id)
    assert registry.release(session=session, job_id=job.id, attempt=2) is False
    assert registry.release(session=session, job_id=job.id, attempt=1) is True
    session.expire_all()
    back = registry.get_job(session=session, job_id=job.id)
    assert back.state == "queued" and back.heartbeat_at is None and back.attempts == 1
    assert registry.unfinished_jobs(session=session, stale_before=utcnow() + FRESH) == [job.id]
    assert _claim(session, job.id)[0].attempts == 2


def test_cancel_queued_at_once_running_at_the_next_boundary(session):
    queued, running, done = _job(session), _job(session), _job(session)
    cancelled = registry.request_cancel(session=session, job_id=queued.id, by="key:ops")
    assert cancelled.state == "cancelled" and "key:ops" in cancelled.error and cancelled.finished_at
    assert registry.request_cancel(session=session, job_id=queued.id, by="key:ops").state == "cancelled"
    assert _claim(session, queued.id)[1] is False  # a delivery of a cancelled job does not run it

    _claim(session, running.id)
    asked = registry.request_cancel(session=session, job_id=running.id, by="key:ops")
    assert asked.state == "running" and asked.cancel_requested
    with pytest.raises(JobCancelled):
        registry.hold_lease(session=session, job_id=running.id, attempt=1)
    stopped = registry.mark_cancelled(session=session, job_id=running.id, attempt=1)
    assert stopped.state == "cancelled" and "key:ops" in stopped.error and "attempt 1" in stopped.error

    _claim(session, done.id)
    registry.mark_succeeded(session=session, job_id=done.id)
    with pytest.raises(Conflict, match="already succeeded"):
        registry.request_cancel(session=session, job_id=done.id, by="key:ops")
    counts = registry.count_jobs_by_state(session=session)
    assert counts["cancelled"] == 2 and counts["succeeded"] == 1
