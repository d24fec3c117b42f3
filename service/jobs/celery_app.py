"""The Celery app (Redis broker and result backend) and its one thin task, `flame.run_stage`.

Run a worker with `flame worker` or `celery -A service.jobs.celery_app worker -c 1`. Tasks ack late,
a worker prefetches one job, and the broker's visibility timeout (`FLAME_JOB_VISIBILITY_TIMEOUT_S`)
is above the longest stage, so Redis never hands a live stage to a second worker; a worker killed
mid-stage stops heartbeating, and a reaper (each worker runs one, as does each API process)
re-queues its job. `run_stage` runs only a job it can claim, so a second delivery of a job another
worker runs with a fresh heartbeat returns without running.

What the result backend records, per delivery: SUCCESS with the version id when the job succeeded;
FAILURE (`StageFailed`, carrying the job's error) when it failed, raised after the failure is
recorded in the job row; REVOKED when it was cancelled; nothing (`Ignore`) when this delivery did not
run it to an end (another worker holds it, or it was handed back to the queue).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.exceptions import Ignore
from celery.signals import celeryd_init, setup_logging, worker_process_init, worker_ready, worker_shutdown

from service.artifacts_s3 import StoreUnavailable
from service.jobs.queue import TASK_NAME
from service.settings import get_settings

if TYPE_CHECKING:
    from service.artifacts import ArtifactStore

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
STORE_RETRY_S = 30  # a job that arrives while the artifact bucket is unusable waits this long, then again
log = logging.getLogger("flame.worker")


class StageFailed(Exception):
    """The job failed; its row holds the error. Raised so that Celery records a FAILURE."""


def make_celery(redis_url: str, *, visibility_timeout_s: int | None = None) -> Celery:
    celery = Celery("flame", broker=redis_url, backend=redis_url)
    visibility = visibility_timeout_s or get_settings().job_visibility_timeout_s
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": visibility},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,  # the root logger keeps service/logs.py's JSON handler
    )
    # throws: a failed job is an expected outcome, logged without a traceback (run_stage logged it).
    celery.task(name=TASK_NAME, bind=True, ignore_result=False, throws=(StageFailed,))(run_stage_task)
    return celery


def run_stage_task(self: Task, job_id: str) -> str | None:
    """Thin shim: ids in, the plain idempotent function does the work; the job row says how it ended."""
    from service.db import get_engine, make_session_factory, session_scope
    from service.jobs.stage import run_stage
    from service.registry import service as registry

    settings = get_settings()
    try:
        store = worker_store()
    except StoreUnavailable as e:  # before the claim: the job stays queued, and is tried again later
        log.error("%s; job %s stays queued, next try in %d s", e, job_id, STORE_RETRY_S)
        raise self.retry(countdown=STORE_RETRY_S, max_retries=None) from None
    factory = make_session_factory(get_engine(settings.database_url))
    run_stage(job_id, session_factory=factory, store=store, settings=settings)
    with session_scope(factory, write=False) as session:
        job = registry.get_job(session=session, job_id=job_id)
        state, error, version = job.state, job.error, job.result_version
    if state == "succeeded":
        return version
    if state == "failed":
        raise StageFailed(f"job {job_id} failed: {error}")
    if state == "cancelled":
        self.backend.mark_as_revoked(self.request.id, reason="job cancelled", request=self.request)
    raise Ignore()


@lru_cache(maxsize=1)
def worker_store() -> ArtifactStore:
    """This worker process's artifact store, its bucket checked once (StoreUnavailable: one line)."""
    from service.artifact_stores import open_store

    return open_store(get_settings())


@lru_cache(maxsize=4)
def celery_for(redis_url: str) -> Celery:
    """A producer app per broker URL (the API enqueues by task name)."""
    return make_celery(redis_url)


_running: list[Any] = []  # the reaper and the metrics server: stopped at worker shutdown


@worker_process_init.connect(weak=False)
def _torch_threads(**_: Any) -> None:
    """Each prefork child: FLAME_TORCH_THREADS when set (training keeps torch's default otherwise)."""
    from service.runtime import apply_training_threads

    apply_training_threads()


@worker_ready.connect(weak=False)
def _start_reaper(**_: Any) -> None:
    """Each worker re-queues jobs whose worker died (safe beside other workers and the API's reapers)."""
    from service.db import get_engine, make_session_factory
    from service.jobs.queue import enqueue
    from service.jobs.reaper import Reaper

    settings = get_settings()
    reaper = Reaper(
        session_factory=make_session_factory(get_engine(settings.database_url)),
        settings=settings,
        requeue=lambda job_id: enqueue(job_id, settings=settings),
    )
    _running.append(reaper.start())


@worker_ready.connect(weak=False)
def _start_metrics(**_: Any) -> None:
    """/metrics and /healthz on FLAME_WORKER_METRICS_PORT (0: none); a busy port is logged, and the
    worker still runs jobs (compose's healthcheck then reports it)."""
    from service.db import get_engine, make_session_factory
    from service.jobs.worker_metrics import WorkerMetricsServer

    settings = get_settings()
    if settings.worker_metrics_port == 0:
        return
    factory = make_session_factory(get_engine(settings.database_url))
    server = WorkerMetricsServer(port=settings.worker_metrics_port, session_factory=factory)
    try:
        _running.append(server.start())
    except OSError as e:
        log.error("%s; this worker serves no metrics", e)


@worker_shutdown.connect(weak=False)
def _stop_running(**_: Any) -> None:
    while _running:
        _running.pop().stop()


app = make_celery(get_settings().redis_url or DEFAULT_BROKER)


# Logging: connected at import, like the receivers above, before any worker starts.
@setup_logging.connect(weak=False)
def _json_logs(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery's lines in the service's JSON format: a receiver here means Celery installs no
    handlers or formats of its own (`flame worker` and `celery -A service.jobs.celery_app worker`)."""
    from service.logs import configure_logging

    configure_logging(loglevel or get_settings().log_level)


@celeryd_init.connect(weak=False)
def _quiet_start(instance: Any = None, **_: Any) -> None:
    """JSON from the worker's first line (its start-up warnings come before `setup_logging`); no
    banner, free text printed to stdout: the worker logs `<name> ready.` instead."""
    from service.logs import configure_logging

    configure_logging(get_settings().log_level)
    if instance is not None:
        instance.quiet = True
