"""The reaper: re-queues running jobs whose worker stopped heartbeating, fails them after
`settings.job_max_attempts`.

Every API process and every Celery worker runs one (`Reaper.start()`), every
`settings.job_reap_interval_s`. Several may look at the same stale job at once: each re-queue is one
conditional UPDATE (`registry.requeue_stale`), and only the reaper whose UPDATE matched enqueues it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db import DB_UNAVAILABLE, session_scope
from service.orm import utcnow
from service.registry import service as registry
from service.settings import Settings

log = logging.getLogger(__name__)


def reap_once(
    *, session_factory: sessionmaker[Session], settings: Settings, requeue: Callable[[str], Any]
) -> dict[str, list[str]]:
    """One pass: {"requeued": [ids this call re-queued and enqueued], "failed": [ids it gave up on]}."""
    stale_before = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s)
    with session_scope(session_factory, write=False) as session:
        candidates = registry.stale_jobs(session=session, stale_before=stale_before)
    done: dict[str, list[str]] = {"requeued": [], "failed": []}
    for job_id, attempt in candidates:
        with session_scope(session_factory) as session:
            outcome = registry.requeue_stale(
                session=session,
                job_id=job_id,
                attempt=attempt,
                stale_before=stale_before,
                max_attempts=settings.job_max_attempts,
            )
        if outcome is None:
            continue  # someone else (another reaper, a redelivery) got there first
        done[outcome].append(job_id)
        if outcome == "requeued":
            log.warning("job %s lost its worker during attempt %d; re-queued", job_id, attempt)
            requeue(job_id)
        else:
            log.error("job %s lost its worker %d times; failed", job_id, attempt)
    return done


class Reaper:
    """`reap_once` every `settings.job_reap_interval_s` on a daemon thread, until `stop()`."""

    def __init__(
        self, *, session_factory: sessionmaker[Session], settings: Settings, requeue: Callable[[str], Any]
    ) -> None:
        self.session_factory, self.settings, self.requeue = session_factory, settings, requeue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flame-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                reap_once(session_factory=self.session_factory, settings=self.settings, requeue=self.requeue)
            except DB_UNAVAILABLE:
                log.warning("reaper: database unavailable; trying again later")
            except Exception:  # noqa: BLE001 - the reaper must outlive any one bad pass
                log.exception("reaper pass failed")
            if self._stop.wait(self.settings.job_reap_interval_s):
                return
