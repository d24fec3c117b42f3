"""The running attempt's side of a job lease (`service.registry.leases`): heartbeats and the checks
made at every epoch and phase boundary of a stage.

`Lease` is a context manager around the attempt: a daemon thread touches `heartbeat_at` every
`interval_s` (so a slow epoch is not mistaken for a dead worker), and `report(...)` records progress
(itself a heartbeat) and then raises, at that boundary, `JobCancelled` when a client asked the job to
stop, `LeaseLost` when the job is no longer this attempt's, or `ShuttingDown` when the process that
runs it is stopping (the job is then handed back to the queue).
"""

from __future__ import annotations

import logging
import math
import threading
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.registry import service as registry
from service.registry.errors import JobCancelled, LeaseLost

log = logging.getLogger(__name__)


class ShuttingDown(Exception):
    """The process running the job is stopping; the job goes back to the queue for another attempt."""


def plain(value: Any) -> Any:
    """JSON-safe progress and metrics: NaN/inf become None (PostgreSQL's JSON refuses them)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


class Lease:
    def __init__(
        self,
        *,
        job_id: str,
        attempt: int,
        session_factory: sessionmaker[Session],
        interval_s: float,
        stop: threading.Event | None = None,
    ) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.session_factory = session_factory
        self.interval_s = interval_s
        self.stop = stop or threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"flame-heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                with session_scope(self.session_factory) as session:
                    held = registry.heartbeat(session=session, job_id=self.job_id, attempt=self.attempt)
            except Exception:  # noqa: BLE001 - a missed beat is not fatal; the next one may land
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                continue
            if not held:
                self.lost.set()
                return

    def check(self) -> None:
        """Raise at a boundary if the attempt must stop (lost lease, process shutting down)."""
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id} is no longer held by attempt {self.attempt}", field="state")
        if self.stop.is_set():
            raise ShuttingDown(f"job {self.job_id}: the process is shutting down")

    def report(self, **progress: Any) -> None:
        """Record progress (a heartbeat too), then stop here if cancelled, lost or shutting down."""
        with session_scope(self.session_factory) as session:
            job = registry.update_progress(
                session=session, job_id=self.job_id, progress=plain(progress), attempt=self.attempt
            )
            cancelled = job.cancel_requested
        if cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled", field="state")
        self.check()
