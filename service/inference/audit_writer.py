"""The prediction audit writer: audit rows leave the event loop and survive a database outage.

The predict route hands each `PredictionRecord` to `AuditWriter.submit` (a queue put, no I/O). One
background thread inserts them in batches. When an insert fails the batch is appended to a local
spool file (JSON lines, fsync'd), and while the spool holds rows new batches join it, so rows stay in
order and an outage costs one failed connection per retry interval, not one per request. Every
`retry_s` the thread replays the spool in chunks, each its own transaction; only after every chunk
committed is the spool truncated. A replay interrupted by a crash is simply replayed again:
`record_predictions` skips rows already stored. Several processes may share one spool: every access
holds an exclusive `flock`, and the file is truncated, never unlinked, so no appender writes to a
file that is gone. `stop()` (the lifespan's shutdown) writes or spools everything still queued.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.observability import AUDIT_ROWS
from service.registry.audit import PredictionRecord, record_predictions

log = logging.getLogger("flame.audit")
BATCH_SIZE = 200
REPLAY_CHUNK = 500
RETRY_S = 2.0
# A batch waits this long for company after its first row: at low load one transaction per request
# cost the API ~3.5 ms of CPU per prediction (GIL); rows are committed within it (or at a flush).
LINGER_S = 0.1
MAX_UNSAVED = 100_000  # rows kept in memory when neither the database nor the spool takes them


class _Stop:
    pass


class AuditWriter:
    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        spool_path: Path,
        batch_size: int = BATCH_SIZE,
        retry_s: float = RETRY_S,
        linger_s: float = LINGER_S,
    ) -> None:
        if batch_size < 1 or retry_s <= 0:
            raise ValueError(f"need batch_size >= 1 and retry_s > 0, got {batch_size}, {retry_s}")
        self.session_factory = session_factory
        self.spool_path = Path(spool_path)
        self.batch_size = batch_size
        self.retry_s = retry_s
        self.linger_s = linger_s
        self._queue: queue.SimpleQueue[PredictionRecord | threading.Event | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._unsaved: list[PredictionRecord] = []

    # --- the API side (any thread, including the event loop) -------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the audit writer is already started")
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="flame-audit", daemon=True)
        self._thread.start()

    def submit(self, record: PredictionRecord) -> None:
        """Queue one row; never blocks and never touches the database."""
        self._queue.put(record)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every row submitted so far is committed or spooled, after one replay attempt."""
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            raise TimeoutError(f"the audit writer did not flush within {timeout}s")

    def stop(self, timeout: float = 30.0) -> None:
        """Write (or spool) everything queued, then end the thread."""
        if self._thread is None:
            return
        self._queue.put(_Stop())
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the audit writer did not stop within %ss; queued rows may be lost", timeout)
        self._thread = None

    def spooled(self) -> int:
        """Rows waiting in the spool file."""
        with self._spool("r") as f:
            return sum(1 for line in f if line.strip()) if f is not None else 0

    # --- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        next_replay = 0.0  # a spool left by an earlier process is replayed at once
        while True:
            batch, markers, stop = self._take()
            if batch or self._unsaved:
                self._write(self._unsaved + batch)
            due = markers or stop or time.monotonic() >= next_replay
            if due and not self._replay():
                next_replay = time.monotonic() + self.retry_s
            for marker in markers:
                marker.set()
            if stop:
                return

    def _take(self) -> tuple[list[PredictionRecord], list[threading.Event], bool]:
        batch: list[PredictionRecord] = []
        markers: list[threading.Event] = []
        try:
            item = self._queue.get(timeout=self.retry_s)
        except queue.Empty:
            return batch, markers, False
        until = time.monotonic() + self.linger_s
        while True:
            if isinstance(item, _Stop):
                return batch, markers, True
            if isinstance(item, threading.Event):
                markers.append(item)
                return batch, markers, False  # write what came before the marker, then signal it
            batch.append(item)
            if len(batch) >= self.batch_size:
                return batch, markers, False
            try:
                item = self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                return batch, markers, False

    def _write(self, batch: list[PredictionRecord]) -> None:
        self._unsaved = []
        if not self._spool_has_rows():
            try:
                with session_scope(self.session_factory) as session:
                    record_predictions(session=session, records=batch)
                AUDIT_ROWS.labels("written").inc(len(batch))
                return
            except Exception as e:  # noqa: BLE001 - any failure: keep the rows in the spool
                log.warning("audit insert failed (%s); spooling %d rows", type(e).__name__, len(batch))
        try:
            self._append(batch)
            AUDIT_ROWS.labels("spooled").inc(len(batch))
        except OSError:
            log.exception(
                "audit spool %s is not writable; keeping %d rows in memory", self.spool_path, len(batch)
            )
            self._unsaved = batch[-MAX_UNSAVED:]
            if len(batch) > MAX_UNSAVED:
                AUDIT_ROWS.labels("dropped").inc(len(batch) - MAX_UNSAVED)
                log.error(
                    "dropped %d audit rows: neither the database nor the spool took them",
                    len(batch) - MAX_UNSAVED,
                )

    def _append(self, batch: list[PredictionRecord]) -> None:
        lines = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in batch)
        with self._spool("a") as f:
            assert f is not None
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def _replay(self) -> bool:
        """Insert the spool's rows and truncate it; False (spool kept) if the database refuses."""
        if not self._spool_has_rows():
            return True
        try:
            with self._spool("r+") as f:
                if f is None:
                    return True
                records = list(_parse(f))
                for i in range(0, len(records), REPLAY_CHUNK):
                    with session_scope(self.session_factory) as session:
                        record_predictions(session=session, records=records[i : i + REPLAY_CHUNK])
                f.seek(0)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
        except Exception as e:  # noqa: BLE001 - the database is still away; try again later
            log.warning("audit spool replay failed (%s); retrying in %ss", type(e).__name__, self.retry_s)
            return False
        if records:
            AUDIT_ROWS.labels("replayed").inc(len(records))
            log.info("replayed %d audit rows from %s", len(records), self.spool_path)
        return True

    def _spool_has_rows(self) -> bool:
        try:
            return self.spool_path.stat().st_size > 0
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _spool(self, mode: str) -> Iterator[IO[str] | None]:
        """The spool file opened in `mode` under an exclusive lock; None when reading a missing one."""
        try:
            f = open(self.spool_path, mode, encoding="utf-8")  # noqa: SIM115 - locked below, closed in finally
        except FileNotFoundError:
            if mode == "a":
                raise
            yield None
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield f
        finally:
            f.close()  # closing releases the lock


def _parse(f: IO[str]) -> Iterator[PredictionRecord]:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            yield PredictionRecord.from_json(json.loads(line))
        except (ValueError, TypeError, KeyError) as e:
            # Only a line cut short by a crash mid-write can look like this; it cannot be recovered.
            log.error("skipping unreadable audit spool line %d: %s", n, e)
