"""POST /tasks under concurrency: 20 requests with one Idempotency-Key at the same moment make one job,
enqueued once (counted on the real queue: the in-process queue's tally or the Redis broker's list),
and every request answers 202 with that job; none gets a 5xx or `database is locked`."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import redis
from sqlalchemy import func, select

from service.jobs.models import Job
from service.jobs.queue import TASK_NAME

from .conftest import LOS, drain, only_labels

N = 20
REDIS_URL = os.environ.get("FLAME_TEST_REDIS_QUEUE_URL", "redis://127.0.0.1:6379/13")
CELERY_QUEUE = "celery"  # the Redis list Celery's default queue lives in
READMISSION = {"name": "readmission", "modalities": ["labs", "cxr"], "head": {"type": "binary"}}


def _stage_body(client, icu, task=LOS):  # type: ignore[no-untyped-def]
    ids = {}
    for split in ("train", "val"):
        lines = "\n".join(json.dumps(s) for s in only_labels(icu.splits[split], [task["name"]]))
        r = client.post(
            "/datasets",
            content=lines,
            params={"specs": json.dumps({"tasks": [task]})},
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status_code == 201, r.text
        ids[split] = r.json()["dataset_id"]
    return {
        "tasks": [task],
        "datasets": {"train": ids["train"], "validation": ids["val"]},
        "options": {"epochs": 1},
    }


def _race(client, body, key):  # type: ignore[no-untyped-def]
    """N threads released together, each POSTing the same body under `key`."""
    barrier = threading.Barrier(N)

    def one(_: int):  # type: ignore[no-untyped-def]
        barrier.wait()
        return client.post("/tasks", json=body, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(N) as pool:
        return list(pool.map(one, range(N)))


def _one_job(responses, session_factory, key) -> str:  # type: ignore[no-untyped-def]
    statuses = [r.status_code for r in responses]
    assert all(s in (200, 202) for s in statuses), [(r.status_code, r.text) for r in responses]
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 1, job_ids
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == key)) == 1
    return job_ids.pop()


def _broker_messages(broker: redis.Redis, job_id: str) -> list[bytes]:
    out = []
    for raw in broker.lrange(CELERY_QUEUE, 0, -1):
        headers = json.loads(raw)["headers"]
        if headers.get("task") == TASK_NAME and job_id in headers.get("argsrepr", ""):
            out.append(raw)
    return out


def test_concurrent_same_key_makes_one_job_enqueued_once_on_redis(client, icu, v1, settings, session_factory):  # type: ignore[no-untyped-def]
    broker = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    broker.ping()  # fails (never skips) without Redis
    body = _stage_body(client, icu)
    settings.redis_url = REDIS_URL  # enqueue on the real broker; no worker consumes, so messages stay
    key = f"race-{os.urandom(6).hex()}"
    job_id = _one_job(_race(client, body, key), session_factory, key)
    messages = _broker_messages(broker, job_id)
    for raw in messages:
        broker.lrem(CELERY_QUEUE, 0, raw)
    assert len(messages) == 1
    with session_factory() as s:
        assert s.get(Job, job_id).state == "queued"


def test_concurrent_same_key_on_the_in_process_queue_while_a_job_writes(client, icu, v1, session_factory):  # type: ignore[no-untyped-def]
    body = _stage_body(client, icu)
    local_queue = client.app.state.job_queue
    other = _stage_body(client, icu, READMISSION)  # los is taken by the first job while it runs
    before = local_queue.enqueued
    first = _one_job(_race(client, body, "race-a"), session_factory, "race-a")
    assert local_queue.enqueued - before == 1
    # The first job trains (and writes its progress) while the second race writes.
    second = _one_job(_race(client, other, "race-b"), session_factory, "race-b")
    assert local_queue.enqueued - before == 2 and second != first
    drain(client)
    with session_factory() as s:
        for job_id in (first, second):
            job = s.get(Job, job_id)
            assert (job.state, job.error) == ("succeeded", None)
