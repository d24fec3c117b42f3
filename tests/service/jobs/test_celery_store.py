"""A Celery worker started without `flame worker` (plain `celery -A ... worker`) on an unusable
artifact bucket: the job it receives stays queued and is tried again later, and the worker says why
in one line, no traceback (`flame worker` itself refuses to start: tests/service/test_artifact_stores.py).
"""

from __future__ import annotations

import subprocess
import time

from service.artifacts import LocalArtifactStore
from service.db import make_session_factory
from service.jobs.queue import enqueue
from service.settings import Settings

from ..conftest import start_celery_worker
from ..s3_server import s3_bucket, s3_endpoint, s3_env  # noqa: F401
from .conftest import job_row, register_pretrained, stage_job
from .test_celery import REDIS_URL, _require_redis


def test_a_job_waits_in_the_queue_while_the_bucket_is_unusable(  # type: ignore[no-untyped-def]
    scratch_pg,
    s3_bucket,  # noqa: F811
    s3_endpoint,  # noqa: F811
    tmp_path,
    icu,
    pretrained,
):
    _require_redis()
    url, engine = scratch_pg
    factory, store = make_session_factory(engine), LocalArtifactStore(tmp_path / "registered")
    with factory.begin() as s:
        register_pretrained(s, store, pretrained)
    job_id = stage_job(factory, store, icu)
    log_path = tmp_path / "celery.log"
    with open(log_path, "wb") as log:
        worker = start_celery_worker(
            redis_url=REDIS_URL,
            database_url=url,
            artifact_root=str(tmp_path / "worker-artifacts"),
            extra_env={
                **s3_env(s3_endpoint),
                "FLAME_ARTIFACT_URL": f"s3://{s3_bucket}-gone/flame",
                "FLAME_ARTIFACT_CACHE": str(tmp_path / "worker-cache"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert enqueue(job_id, settings=Settings(redis_url=REDIS_URL, database_url=url)) is not None
        deadline, text = time.monotonic() + 90, ""
        while "stays queued" not in text:
            assert time.monotonic() < deadline, text[-3000:]
            assert worker.poll() is None, text[-3000:]
            time.sleep(0.5)
            text = log_path.read_text()
        line = next(x for x in text.splitlines() if "stays queued" in x)
        assert f"the artifact bucket '{s3_bucket}-gone' at {s3_endpoint} does not exist" in line
        assert f"FLAME_ARTIFACT_URL; job {job_id} stays queued, next try in 30 s" in line
        assert "Traceback" not in text, text[-3000:]
        job = job_row(factory, job_id)
        assert (job.state, job.attempts) == ("queued", 0)
        assert not (tmp_path / "worker-artifacts").exists()  # nothing fell back to a local store
    finally:
        worker.terminate()
        worker.wait(timeout=30)
