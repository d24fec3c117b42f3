"""The Celery app (Redis broker and result backend) and its one thin task, `flame.run_stage`.

Run a worker with `flame worker` or `celery -A service.jobs.celery_app worker -c 1`. Tasks ack late
and a worker takes one job at a time, so a worker killed mid-stage gets its job redelivered;
`run_stage` is idempotent. The worker reads its database, artifact root and device from FLAME_*.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from service.settings import get_settings

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def make_celery(redis_url: str) -> Celery:
    celery = Celery("flame", broker=redis_url, backend=redis_url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        result_expires=7 * 24 * 3600,
    )
    celery.task(name="flame.run_stage", ignore_result=False)(run_stage_task)
    return celery


def run_stage_task(job_id: str) -> str | None:
    """Thin shim: ids in, the plain idempotent function does the work."""
    from service.artifacts import LocalArtifactStore
    from service.db import get_engine, make_session_factory
    from service.jobs.stage import run_stage

    settings = get_settings()
    return run_stage(
        job_id,
        session_factory=make_session_factory(get_engine(settings.database_url)),
        store=LocalArtifactStore(settings.artifact_root),
        settings=settings,
    )


@lru_cache(maxsize=4)
def celery_for(redis_url: str) -> Celery:
    """A producer app per broker URL (the API enqueues by task name)."""
    return make_celery(redis_url)


app = make_celery(get_settings().redis_url or DEFAULT_BROKER)
