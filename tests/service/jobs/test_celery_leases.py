"""Leases on the production stack: the REAL PostgreSQL, the REAL Redis broker and REAL Celery worker
processes that get only environment variables (a 4 s heartbeat timeout here).

A worker SIGKILLed mid-stage is replaced and the job succeeds at attempt 2 with one new version;
the result backend says how each delivery ended (FAILURE for a failed job, REVOKED for a cancelled
one, nothing for a delivery of a job another worker holds)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import redis

from service.artifacts import LocalArtifactStore
from service.db import make_session_factory, session_scope
from service.jobs.celery_app import StageFailed
from service.jobs.lease import Lease
from service.jobs.queue import enqueue
from service.registry import service as registry
from service.settings import Settings

from ..conftest import start_celery_worker
from .conftest import job_row, register_pretrained, stage_job, wait_for

REDIS_URL = os.environ.get("FLAME_TEST_REDIS_LEASES_URL", "redis://127.0.0.1:6379/11")
WORKER_ENV = {"FLAME_JOB_HEARTBEAT_TIMEOUT_S": "4"}


@pytest.fixture
def stack(scratch_pg, tmp_path, pretrained):  # type: ignore[no-untyped-def]
    broker = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        broker.ping()
    except Exception as e:  # noqa: BLE001 - any failure to connect means the same thing here
        pytest.fail(f"Redis is required and is not reachable at {REDIS_URL} ({e})", pytrace=False)
    url, engine = scratch_pg
    factory, store = make_session_factory(engine), LocalArtifactStore(tmp_path / "artifacts")
    with session_scope(factory) as s:
        register_pretrained(s, store, pretrained)
    settings = Settings(redis_url=REDIS_URL, database_url=url, artifact_root=store.root)
    workers: list[subprocess.Popen] = []

    def worker(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the process writes it until it ends
        proc = start_celery_worker(
            redis_url=REDIS_URL,
            database_url=url,
            artifact_root=str(store.root),
            extra_env=WORKER_ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        workers.append(proc)
        return proc

    yield settings, factory, store, worker
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for log in sorted(Path(tmp_path).glob("*.log")):
        print(f"--- {log.name}\n{log.read_text()[-3000:]}")  # shown when the test fails
    broker.flushdb()  # this test's queue, unacked messages and results
    broker.close()


def _versions(factory) -> list[str]:  # type: ignore[no-untyped-def]
    with factory() as s:
        return [v.id for v in registry.list_versions(session=s)]


def test_a_worker_killed_mid_stage_is_replaced_and_the_job_succeeds_once(stack, icu):  # type: ignore[no-untyped-def]
    settings, factory, store, worker = stack
    job_id = stage_job(factory, store, icu, epochs=30, patience=100, refit_epochs=0)
    first = worker("first")
    enqueue(job_id, settings=settings)
    wait_for(lambda: job_row(factory, job_id).progress.get("epoch"), 180, "an epoch on the first worker")
    first.kill()  # SIGKILL: no cleanup, the message stays unacknowledged, the heartbeat stops
    first.wait(timeout=30)
    job = job_row(factory, job_id)
    assert (job.state, job.attempts) == ("running", 1) and job.progress["epoch"] < 30

    worker("second")  # its reaper re-queues the job once the heartbeat is 4 s old; it runs it
    job = wait_for(
        lambda: (j := job_row(factory, job_id)).state in ("succeeded", "failed") and j, 240, "the job"
    )
    assert (job.state, job.attempts, job.result_version) == ("succeeded", 2, "v2"), job.error
    assert _versions(factory) == ["v1", "v2"]


def test_the_result_backend_says_how_each_delivery_ended(stack, icu, tmp_path):  # type: ignore[no-untyped-def]
    settings, factory, store, worker = stack
    broken = stage_job(factory, store, icu)
    bad = "\n".join(
        json.dumps(s) for s in [{"modalities": {"labs": {"values": [1.0]}}, "labels": {"los": 1}}]
    )
    with session_scope(factory) as s:
        bad_id = registry.create_dataset(
            session=s, store=store, name="bad", content=bad.encode(), n_samples=1
        ).id
        job = registry.get_job(session=s, job_id=broken)
        job.request = {**job.request, "datasets": {**job.request["datasets"], "train": bad_id}}
    cancelled = stage_job(factory, store, icu, seed=1)
    with session_scope(factory) as s:
        registry.request_cancel(session=s, job_id=cancelled, by="key:ops")
    held = stage_job(factory, store, icu, seed=2)
    with session_scope(factory) as s:  # another worker runs it (the lease below keeps it beating)
        registry.claim_job(
            session=s,
            job_id=held,
            stale_before=registry.get_job(session=s, job_id=held).created_at,
            max_attempts=3,
        )

    worker("only")
    with Lease(job_id=held, attempt=1, session_factory=factory, interval_s=0.5):
        failed, revoked, ignored = (enqueue(j, settings=settings) for j in (broken, cancelled, held))
        failed.get(timeout=180, propagate=False)
        assert failed.state == "FAILURE" and isinstance(failed.result, StageFailed), failed.state
        assert "train dataset" in str(failed.result) and job_row(factory, broken).state == "failed"
        assert wait_for(lambda: revoked.state == "REVOKED", 60, "the cancelled job's delivery")
        log = tmp_path / "only.log"
        wait_for(lambda: f"[{ignored.id}] ignored" in log.read_text(), 60, "the third delivery to end")
        assert ignored.state == "PENDING"  # the delivery ended without a result: it did not run the job
        job = job_row(factory, held)
        assert (job.state, job.attempts, job.progress) == ("running", 1, {})
    assert job_row(factory, cancelled).attempts == 0 and _versions(factory) == ["v1"]
