"""The stage lock on the real databases: a second holder waits until the first releases it
(PostgreSQL: an advisory lock on its own connection; SQLite: a file lock beside the database)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from service.jobs.stage_lock import stage_lock


def test_second_stage_waits_for_the_first(engine):  # type: ignore[no-untyped-def]
    order: list[str] = []
    first_in, second_in = threading.Event(), threading.Event()
    release = threading.Event()

    def first() -> None:
        with stage_lock(engine):
            order.append("first in")
            first_in.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        first_in.wait(10)
        with stage_lock(engine):
            order.append("second in")
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert first_in.wait(10)
    assert not second_in.wait(1.0), "the second stage got the lock while the first held it"
    release.set()
    assert second_in.wait(10), "the second stage never got the lock after the first released it"
    for t in threads:
        t.join(10)
    assert order == ["first in", "first out", "second in"]
    if engine.dialect.name == "sqlite":  # the lock is a file beside the database, not a transaction
        assert Path(f"{engine.url.database}.stage.lock").exists()
    with stage_lock(engine):  # released for good: taken again at once
        pass


def test_lock_is_not_a_database_transaction(engine, session_factory):  # type: ignore[no-untyped-def]
    """Holding the stage lock must not block other writers (progress, uploads, the audit)."""
    from service.registry import service as registry

    with stage_lock(engine):
        started = time.monotonic()
        with session_factory.begin() as s:
            registry.create_job(session=s, kind="stage", request={"tasks": []})
        assert time.monotonic() - started < 2.0
    with session_factory() as s:
        assert len(registry.list_jobs(session=s)) == 1
