"""Where a queued job goes: Celery on Redis when `settings.redis_url` is set, else the app's
in-process queue (`app.state.job_queue`, built in the lifespan).

The in-process queue is one daemon thread draining a FIFO of job ids (jobs run one at a time, as with
a single worker); it starts on the first job. Beyond `maxsize` waiting jobs `put` raises `QueueFull`,
which the API answers with 503 and Retry-After. Either way the job row is the source of truth:
`run_stage` runs only a job it can claim, so a job delivered twice runs once. When the app starts,
`recover()` enqueues the jobs an earlier process left unfinished; when it stops, `stop()` asks the
running stage to hand its job back to the queue at the next epoch boundary.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.artifacts import ArtifactStore
from service.db import session_scope
from service.errors import ServiceUnavailable
from service.orm import utcnow
from service.registry import service as registry
from service.settings import Settings

log = logging.getLogger(__name__)

LOCAL_QUEUE_DEPTH = 16
RETRY_AFTER_S = 30
SHUTDOWN_GRACE_S = 30.0  # how long stop() waits for the running stage to reach an epoch boundary
TASK_NAME = "flame.run_stage"


class QueueFull(ServiceUnavailable):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(message, retry_after=retry_after)


class LocalQueue:
    """A FIFO of job ids with one worker thread, started lazily; `on_success()` runs after a job
    registers its version (the app reloads its model host there)."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        store: ArtifactStore,
        settings: Settings,
        maxsize: int = LOCAL_QUEUE_DEPTH,
        on_success: Callable[[], Any] | None = None,
    ) -> None:
        self.session_factory, self.store, self.settings = session_factory, store, settings
        self.maxsize = maxsize
        self.on_success = on_success
        self._queue: queue.Queue[str | None] = queue.Queue()  # the bound is enforced by put()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.enqueued = 0  # jobs ever accepted (a job enqueued twice counts twice)

    def depth(self) -> int:
        return self._queue.qsize()

    def has_room(self) -> bool:
        return self._queue.qsize() < self.maxsize

    def put(self, job_id: str, *, force: bool = False) -> None:
        """Queue `job_id`; `force` (recovery, re-queues) ignores the bound: those jobs already exist."""
        if self._stop.is_set():
            raise QueueFull("the server is shutting down; retry shortly")
        with self._lock:
            if not force and self._queue.qsize() >= self.maxsize:
                raise QueueFull(f"the training queue is full ({self.maxsize} jobs waiting); retry later")
            self._queue.put(job_id)
            self.enqueued += 1
        self._ensure_worker()

    def recover(self) -> list[str]:
        """Enqueue what an earlier process left unfinished: queued jobs, and running ones whose
        heartbeat is stale (a fresh one belongs to a live process). Returns their ids."""
        stale_before = utcnow() - timedelta(seconds=self.settings.job_heartbeat_timeout_s)
        with session_scope(self.session_factory, write=False) as session:
            ids = registry.unfinished_jobs(session=session, stale_before=stale_before)
        for job_id in ids:
            self.put(job_id, force=True)
        if ids:
            log.info("re-enqueued %d unfinished jobs", len(ids))
        return ids

    def join(self) -> None:
        """Wait until every queued job has run (tests, orderly shutdown)."""
        self._queue.join()

    def stop(self, timeout: float = SHUTDOWN_GRACE_S) -> None:
        """Take no more jobs; the running stage hands its job back at its next epoch boundary, and
        jobs still waiting stay `queued` in the database for the next start."""
        self._stop.set()
        self._queue.put(None)  # wakes the worker
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the running job did not stop within %.0f s", timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="flame-jobs", daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        from service.jobs.stage import run_stage  # torch loads on the first job, not at import

        while True:
            job_id = self._queue.get()
            try:
                if job_id is None or self._stop.is_set():
                    break
                version = run_stage(
                    job_id,
                    session_factory=self.session_factory,
                    store=self.store,
                    settings=self.settings,
                    stop=self._stop,
                )
                if version is not None and self.on_success is not None:
                    self.on_success()
            except Exception:  # noqa: BLE001 - run_stage records failures; keep the worker alive
                log.exception("job %s crashed outside run_stage's own handling", job_id)
            finally:
                self._queue.task_done()
        while True:  # after stop: what is left stays queued in the database; let join() return
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self._queue.task_done()


def has_room(settings: Settings, local: LocalQueue | None) -> bool:
    """False when a new job would be refused (only the in-process queue is bounded here)."""
    return settings.redis_url is not None or (local is not None and local.has_room())


def enqueue(job_id: str, *, settings: Settings, local: LocalQueue | None = None, force: bool = False) -> Any:
    """Hand `job_id` to a worker: Celery by task name (workers build their own session and store from
    the environment), or the app's in-process queue `local`."""
    if settings.redis_url is not None:
        from service.jobs.celery_app import celery_for

        return celery_for(settings.redis_url).send_task(TASK_NAME, args=[job_id])
    if local is None:
        raise ValueError("FLAME_REDIS_URL is unset and no in-process queue was given")
    local.put(job_id, force=force)
    return None


def commit_and_enqueue(
    job_id: str, *, session: Session, settings: Settings, local: LocalQueue | None
) -> None:
    """Commit the request's new job, then hand it to a worker; if the queue refuses it after all, the
    job is failed with the reason and QueueFull (503) is raised."""
    session.commit()
    try:
        enqueue(job_id, settings=settings, local=local)
    except QueueFull as e:
        registry.mark_failed(session=session, job_id=job_id, error=e.message)
        session.commit()
        raise
