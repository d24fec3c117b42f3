"""The running side of a lease on both databases: a second delivery does not run a live job, a
given-up attempt stops and registers nothing, heartbeats go on through slow epochs, and reapers on
several replicas re-queue a stale job exactly once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from service.db import session_scope
from service.jobs.lease import Lease
from service.jobs.reaper import reap_once
from service.jobs.stage import run_stage
from service.orm import utcnow
from service.registry import service as registry
from service.registry.errors import LeaseLost

from .conftest import job_row, stage_job, wait_for


def _claim(session_factory, job_id: str, *, stale: bool, max_attempts: int = 3) -> bool:  # type: ignore[no-untyped-def]
    """Claim as another worker would: `stale` makes any heartbeat count as stale (a takeover)."""
    stale_before = utcnow() + (timedelta(seconds=1) if stale else timedelta(seconds=-60))
    with session_scope(session_factory) as s:  # BEGIN IMMEDIATE on SQLite, as the workers' writes
        _, claimed = registry.claim_job(
            session=s, job_id=job_id, stale_before=stale_before, max_attempts=max_attempts
        )
    return claimed


def _versions(session_factory) -> list[str]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return [v.id for v in registry.list_versions(session=s)]


def test_a_second_delivery_of_a_job_running_elsewhere_does_not_run_it(
    session_factory, store, settings, icu, v1
):  # type: ignore[no-untyped-def]
    job_id = stage_job(session_factory, store, icu)
    assert _claim(session_factory, job_id, stale=False)  # another worker runs it and beats
    assert run_stage(job_id, session_factory=session_factory, store=store, settings=settings) is None
    job = job_row(session_factory, job_id)
    assert (job.state, job.attempts, job.progress) == ("running", 1, {})
    assert _versions(session_factory) == [v1]


def test_a_given_up_attempt_stops_at_its_next_epoch_and_registers_nothing(
    session_factory, store, settings, icu, v1
):  # type: ignore[no-untyped-def]
    job_id = stage_job(session_factory, store, icu, epochs=40, patience=100, refit_epochs=0)
    result: dict[str, str | None] = {}
    first = threading.Thread(
        target=lambda: result.update(
            version=run_stage(job_id, session_factory=session_factory, store=store, settings=settings)
        )
    )
    first.start()
    wait_for(lambda: job_row(session_factory, job_id).progress.get("epoch"), 120, "the first epoch")
    assert _claim(session_factory, job_id, stale=True)  # as if its heartbeat had gone stale
    first.join(120)
    assert not first.is_alive() and result == {"version": None}
    job = job_row(session_factory, job_id)
    assert (job.state, job.attempts, job.error) == ("running", 2, None)  # attempt 2's job now
    assert job.progress["epoch"] < 40
    assert _versions(session_factory) == [v1]


def test_heartbeats_go_on_between_epochs_and_notice_a_takeover(session_factory, store, icu, v1):  # type: ignore[no-untyped-def]
    job_id = stage_job(session_factory, store, icu)
    assert _claim(session_factory, job_id, stale=False)
    claimed_at = job_row(session_factory, job_id).heartbeat_at
    with Lease(job_id=job_id, attempt=1, session_factory=session_factory, interval_s=0.05) as lease:
        wait_for(lambda: job_row(session_factory, job_id).heartbeat_at > claimed_at, 10, "a heartbeat")
        lease.check()  # still ours
        assert _claim(session_factory, job_id, stale=True)
        wait_for(lease.lost.is_set, 10, "the lease to be lost")
        with pytest.raises(LeaseLost):
            lease.check()


def test_reapers_on_several_replicas_requeue_a_stale_job_once(session_factory, store, settings, icu, v1):  # type: ignore[no-untyped-def]
    job_id = stage_job(session_factory, store, icu)
    assert _claim(session_factory, job_id, stale=False)
    fast = settings.model_copy(update={"job_heartbeat_timeout_s": 0.3, "job_max_attempts": 2})
    time.sleep(0.5)  # the worker "died": no heartbeat since
    enqueued: list[str] = []
    barrier = threading.Barrier(4)

    def replica(_: int) -> dict[str, list[str]]:
        barrier.wait()
        return reap_once(session_factory=session_factory, settings=fast, requeue=enqueued.append)

    with ThreadPoolExecutor(4) as pool:
        passes = list(pool.map(replica, range(4)))
    assert enqueued == [job_id] and sum(len(p["requeued"]) for p in passes) == 1
    job = job_row(session_factory, job_id)
    assert (job.state, job.attempts, job.heartbeat_at) == ("queued", 1, None)

    assert _claim(session_factory, job_id, stale=False)  # attempt 2 (the limit) dies as well
    time.sleep(0.5)
    assert reap_once(session_factory=session_factory, settings=fast, requeue=enqueued.append) == {
        "requeued": [],
        "failed": [job_id],
    }
    job = job_row(session_factory, job_id)
    assert job.state == "failed" and "gave up after 2 attempts" in job.error and enqueued == [job_id]
