"""The audit writer on SQLite: rows spool to a local file while the database cannot be opened, are
replayed exactly once when it returns (also by the next process), and shutdown writes what is queued.

"Unreachable" is real: the writer's session factory is pointed at a SQLite path that cannot be opened.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select

from service.db import load_models, make_engine, make_session_factory, session_scope
from service.inference.audit_writer import AuditWriter
from service.inference.models import PredictionAudit
from service.orm import utcnow
from service.registry.audit import PredictionRecord, record_predictions

UNOPENABLE = "sqlite:////proc/flame-no-such-dir/registry.db"


@pytest.fixture
def db(tmp_path):  # type: ignore[no-untyped-def]
    good = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    load_models().create_all(good)
    bad = create_engine(UNOPENABLE)
    factory = make_session_factory(good)  # the writer's; tests re-point it with configure(bind=...)
    yield {"good": good, "bad": bad, "factory": factory, "check": make_session_factory(good)}
    good.dispose()
    bad.dispose()


def record(request_id: str, **kw) -> PredictionRecord:  # type: ignore[no-untyped-def]
    fields = {
        "task": "mortality",
        "version": "v1",
        "modalities_present": ("vitals", "labs"),
        "latency_ms": 3.5,
    }
    return PredictionRecord(request_id=request_id, status_code=200, **{**fields, **kw})


def stored(db) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    with db["check"]() as s:
        query = select(PredictionAudit.request_id, PredictionAudit.created_at).order_by(PredictionAudit.id)
        return [tuple(row) for row in s.execute(query)]


def test_spools_while_unreachable_and_replays_once_when_back(db, tmp_path):  # type: ignore[no-untyped-def]
    spool = tmp_path / "spool" / "audit.jsonl"
    writer = AuditWriter(session_factory=db["factory"], spool_path=spool, batch_size=4, retry_s=0.1)
    writer.start()
    try:
        writer.submit(record("before"))
        writer.flush()
        assert [rid for rid, _ in stored(db)] == ["before"] and writer.spooled() == 0

        db["factory"].configure(bind=db["bad"])
        for i in range(10):
            writer.submit(record(f"down-{i}"))
        writer.flush()
        assert writer.spooled() == 10 and len(stored(db)) == 1
        lines = [json.loads(line) for line in spool.read_text().splitlines()]
        assert [line["request_id"] for line in lines] == [f"down-{i}" for i in range(10)]
        assert set(lines[0]) == {
            "request_id",
            "task",
            "version",
            "modalities_present",
            "latency_ms",
            "status_code",
            "caller_key_id",
            "created_at",
        }

        db["factory"].configure(bind=db["good"])
        writer.flush()  # a flush also replays the spool
        assert writer.spooled() == 0 and spool.exists() and spool.stat().st_size == 0
        writer.submit(record("after"))
        writer.flush()
    finally:
        writer.stop()
    ids = [rid for rid, _ in stored(db)]
    assert ids == ["before", *[f"down-{i}" for i in range(10)], "after"]


def test_replay_skips_rows_already_stored_and_the_next_process_replays(db, tmp_path):  # type: ignore[no-untyped-def]
    spool = tmp_path / "audit.jsonl"
    first = record("r-a")
    reused = record("r-a", created_at=first.created_at + timedelta(seconds=1))  # a client reusing its id
    other = record("r-b", caller_key_id="key-1")
    db["factory"].configure(bind=db["bad"])
    down = AuditWriter(session_factory=db["factory"], spool_path=spool, retry_s=0.1)
    down.start()
    for r in (first, other, reused):
        down.submit(r)
    down.stop()  # shutdown with the database away: everything is in the spool
    assert down.spooled() == 3 and stored(db) == []

    # As if a replay committed `first` and crashed before truncating the spool.
    with session_scope(db["check"]) as s:
        assert record_predictions(session=s, records=[first]) == 1

    db["factory"].configure(bind=db["good"])
    up = AuditWriter(session_factory=db["factory"], spool_path=spool, retry_s=0.1)
    up.start()
    up.flush()
    up.stop()
    rows = stored(db)
    assert sorted(rows) == sorted(
        [("r-a", first.created_at), ("r-a", reused.created_at), ("r-b", other.created_at)]
    )
    assert up.spooled() == 0
    with db["check"]() as s:
        row = s.scalars(select(PredictionAudit).where(PredictionAudit.request_id == "r-b")).one()
        assert (row.caller_key_id, row.modalities_present, row.latency_ms) == (
            "key-1",
            ["labs", "vitals"],
            3.5,
        )


def test_stop_writes_every_queued_row(db, tmp_path):  # type: ignore[no-untyped-def]
    writer = AuditWriter(session_factory=db["factory"], spool_path=tmp_path / "audit.jsonl", batch_size=7)
    writer.start()
    for i in range(50):
        writer.submit(record(f"q-{i}"))
    writer.stop()
    with db["check"]() as s:
        assert s.scalar(select(func.count()).select_from(PredictionAudit)) == 50
    assert writer.spooled() == 0


def test_record_rejects_bad_values():
    with pytest.raises(ValueError, match="request_id"):
        record("")
    with pytest.raises(ValueError, match="latency_ms"):
        record("x", latency_ms=float("nan"))
    with pytest.raises(ValueError, match="timezone-aware"):
        record("x", created_at=utcnow().replace(tzinfo=None))
