"""A stage through the REAL Redis broker and a REAL Celery worker process on the REAL PostgreSQL.

The worker gets only environment variables (as in deployment): FLAME_REDIS_URL, FLAME_DATABASE_URL
(a scratch database made for this test) and FLAME_ARTIFACT_ROOT shared with the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import redis

from service.artifacts import LocalArtifactStore
from service.db import make_session_factory
from service.jobs.queue import enqueue
from service.registry import service as registry
from service.settings import Settings

from ..conftest import start_celery_worker
from .conftest import LOS, only_labels, register_pretrained

REDIS_URL = os.environ.get("FLAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as e:  # noqa: BLE001 - any failure to connect means the same thing here
        pytest.fail(
            f"Redis is required for this test and is not reachable at {REDIS_URL} ({e})", pytrace=False
        )


def test_celery_worker_runs_stage_and_moves_active(scratch_pg, tmp_path, icu, pretrained):  # type: ignore[no-untyped-def]
    _require_redis()
    url, engine = scratch_pg
    factory, store = make_session_factory(engine), LocalArtifactStore(tmp_path / "artifacts")
    with factory.begin() as s:
        register_pretrained(s, store, pretrained)
        ids = {}
        for split in ("train", "val"):
            samples = only_labels(icu.splits[split], ["los"])
            data = "\n".join(json.dumps(x) for x in samples).encode()
            ids[split] = registry.create_dataset(
                session=s, store=store, name=split, content=data, n_samples=len(samples)
            ).id
        request = {
            "tasks": [LOS],
            "datasets": {"train": ids["train"], "validation": ids["val"]},
            "options": {"epochs": 1, "seed": 0},
        }
        job_id = registry.create_job(session=s, kind="stage", request=request, parent_version="v1").id

    worker = start_celery_worker(
        redis_url=REDIS_URL,
        database_url=url,
        artifact_root=str(store.root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        settings = Settings(redis_url=REDIS_URL, database_url=url, artifact_root=store.root)
        assert enqueue(job_id, settings=settings) is not None  # an AsyncResult: it went to the broker
        deadline, state = time.monotonic() + 120, "queued"
        while time.monotonic() < deadline and state not in ("succeeded", "failed"):
            time.sleep(1)
            assert worker.poll() is None, "the Celery worker exited early"
            with factory() as s:
                job = registry.get_job(session=s, job_id=job_id)
                state, error = job.state, job.error
        assert state == "succeeded", f"job is {state} after the wait (error: {error})"
        with factory() as s:
            assert registry.resolve_alias(session=s).id == "v2"
            assert registry.get_job(session=s, job_id=job_id).result_version == "v2"
            assert registry.get_task(session=s, name="los", version="v2").cursor == 1
    finally:
        worker.terminate()
        try:
            out, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
        print(out[-4000:])
