"""One continual stage at a time per registry: a lock held in (or beside) the database.

A stage resolves its parent (`active`) when it starts and moves `active` when it ends, minutes
later; two stages in between would both stack on the same parent and the second would drop the
first one's task. `stage_lock` makes them run one after another, across processes and hosts:

- PostgreSQL: a session-level `pg_advisory_lock` on a fixed key (per schema, so test schemas in one
  database do not queue behind each other), taken on a dedicated AUTOCOMMIT connection kept for the
  stage. No transaction stays open while the stage trains, and if the worker dies its connection
  closes and the server releases the lock.
- SQLite: an OS lock (`fcntl.flock`) on `<database file>.stage.lock`. SQLite's own write lock would
  also serialise stages, but holding a write transaction for minutes would block every other writer
  (progress, uploads, the audit); the file lock blocks only the next stage. The kernel drops it when
  the process dies. An in-memory database lives in one process, so a process-local lock suffices.

`active` still moves by compare-and-swap (`registry.swap_alias`), so a lock lost with its
connection can cost a job (it fails clearly) but never a served task.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

_MEMORY_LOCK = threading.Lock()


def advisory_key(namespace: str, schema: str) -> int:
    """A signed 64-bit advisory-lock key for `namespace` in `schema` (stable across processes)."""
    digest = hashlib.sha256(f"flame:{namespace}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def engine_of(session_factory: sessionmaker[Session]) -> Engine:
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise ValueError("the session factory must be bound to an Engine to take the stage lock")
    return bind


@contextmanager
def stage_lock(engine: Engine) -> Iterator[None]:
    """Held for a whole stage; blocks until the previous stage (any process) has released it."""
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        with _MEMORY_LOCK:
            yield
        return
    with open(f"{database}.stage.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextmanager
def _pg_lock(engine: Engine) -> Iterator[None]:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        key = advisory_key("stage", schema)
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except Exception:  # noqa: BLE001 - a broken connection already released it server-side
                conn.invalidate()  # never hand a connection that may still hold the lock back to the pool


def lock_submissions(session: Session) -> None:
    """Serialise `POST /tasks` checks with job creation until the session's transaction ends
    (PostgreSQL: a transaction-level advisory lock; SQLite: a write session already holds the
    database's write lock from its first statement)."""
    if session.get_bind().dialect.name == "postgresql":
        schema = session.execute(text("SELECT current_schema()")).scalar_one()
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key("submit", schema)})
