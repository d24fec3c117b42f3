"""Where a queued job goes: Celery on Redis when `settings.redis_url` is set, else an in-process queue.

The in-process queue is one daemon thread draining a bounded `queue.Queue` (jobs run one at a time,
as with a single worker); it starts on the first job. A full queue raises `QueueFull`, which the API
answers with 503 and Retry-After. Either way the job row is the source of truth: `run_stage` is
idempotent, so a job delivered twice runs once.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.artifacts import ArtifactStore
from service.errors import ServiceUnavailable
from service.settings import Settings

log = logging.getLogger(__name__)

LOCAL_QUEUE_DEPTH = 16
RETRY_AFTER_S = 30
TASK_NAME = "flame.run_stage"


class QueueFull(ServiceUnavailable):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(message, retry_after=retry_after)


@dataclass(frozen=True)
class _Item:
    job_id: str
    session_factory: sessionmaker[Session]
    store: ArtifactStore
    settings: Settings


class LocalQueue:
    """A bounded FIFO with one worker thread, started lazily."""

    def __init__(self, maxsize: int = LOCAL_QUEUE_DEPTH) -> None:
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.enqueued = 0  # jobs ever accepted (a job enqueued twice counts twice)

    def depth(self) -> int:
        return self._queue.qsize()

    def has_room(self) -> bool:
        return not self._queue.full()

    def put(self, item: _Item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise QueueFull(
                f"the training queue is full ({self._queue.maxsize} jobs waiting); retry later"
            ) from None
        with self._lock:
            self.enqueued += 1
        self._ensure_worker()

    def join(self) -> None:
        """Wait until every queued job has run (tests, orderly shutdown)."""
        self._queue.join()

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="flame-jobs", daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        from service.jobs.stage import run_stage  # torch loads on the first job, not at import

        while True:
            item = self._queue.get()
            try:
                run_stage(
                    item.job_id,
                    session_factory=item.session_factory,
                    store=item.store,
                    settings=item.settings,
                )
            except Exception:  # noqa: BLE001 - run_stage records failures; keep the worker alive
                log.exception("job %s crashed outside run_stage's own handling", item.job_id)
            finally:
                self._queue.task_done()


local_queue = LocalQueue()


def has_room(settings: Settings) -> bool:
    """False when a new job would be refused (only the in-process queue is bounded here)."""
    return settings.redis_url is not None or local_queue.has_room()


def enqueue(
    job_id: str,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session] | None = None,
    store: ArtifactStore | None = None,
) -> Any:
    """Hand `job_id` to a worker. Celery workers build their own session and store from the
    environment; the in-process queue runs with the caller's `session_factory` and `store`."""
    if settings.redis_url is not None:
        from service.jobs.celery_app import celery_for

        return celery_for(settings.redis_url).send_task(TASK_NAME, args=[job_id])
    if session_factory is None or store is None:
        raise ValueError("the in-process queue needs session_factory and store (FLAME_REDIS_URL is unset)")
    local_queue.put(_Item(job_id, session_factory, store, settings))
    return None
