"""Training jobs: idempotent creation and the queued -> running -> succeeded | failed lifecycle."""

from __future__ import annotations

import pytest

from service.jobs.models import Job
from service.registry import jobs
from service.registry import service as registry
from service.registry.errors import Conflict, JobNotFound, VersionNotFound

REQUEST = {"tasks": [{"name": "los"}], "datasets": ["d1"], "options": {"epochs": 2}}


def test_same_idempotency_key_returns_the_same_job(session_factory):
    with session_factory.begin() as s:
        first = registry.create_job(session=s, kind="stage", request=REQUEST, idempotency_key="k-1")
    with session_factory.begin() as s:
        # Key order in the body does not matter; the retry gets the original job back.
        again = registry.create_job(
            session=s, kind="stage", request=dict(reversed(REQUEST.items())), idempotency_key="k-1"
        )
        other = registry.create_job(session=s, kind="stage", request=REQUEST)
        assert again.id == first.id and again.state == "queued"
        assert other.id != first.id
        with pytest.raises(Conflict, match="already used for a different request") as info:
            registry.create_job(session=s, kind="stage", request={"tasks": []}, idempotency_key="k-1")
        assert info.value.field == "idempotency_key"
    with session_factory() as s:
        assert s.query(Job).count() == 2


def test_idempotency_race_lost_at_insert_returns_the_winner(session_factory, monkeypatch):
    with session_factory.begin() as s:
        winner = registry.create_job(session=s, kind="stage", request=REQUEST, idempotency_key="k-2")
    real = jobs._by_key
    calls = []

    def blind_first_lookup(session, key):  # type: ignore[no-untyped-def]
        calls.append(key)
        return None if len(calls) == 1 else real(session, key)  # the winner committed after our check

    monkeypatch.setattr(jobs, "_by_key", blind_first_lookup)
    with session_factory.begin() as s:
        job, created = registry.create_or_get_job(
            session=s, kind="stage", request=REQUEST, idempotency_key="k-2"
        )
        assert job.id == winner.id and len(calls) == 2 and created is False
    with session_factory() as s:
        assert s.query(Job).count() == 1


def test_job_lifecycle(session_factory, store):
    with session_factory.begin() as s:
        version = registry.register_version(
            session=s, store=store, parent=None, files={"w": b"w"}, moved_by="t"
        )
        job = registry.create_job(
            session=s, kind="stage", request=REQUEST, parent_version=version.id, created_by="key-1"
        )
        assert (job.state, job.progress, job.started_at, job.attempts) == ("queued", {}, None, 0)
    with session_factory.begin() as s:
        with pytest.raises(Conflict, match="only a running job reports progress"):
            registry.update_progress(session=s, job_id=job.id, progress={"epoch": 1})
        registry.mark_running(session=s, job_id=job.id)
    with session_factory.begin() as s:
        registry.update_progress(session=s, job_id=job.id, progress={"epoch": 1, "of": 2})
    with session_factory.begin() as s:
        registry.update_progress(session=s, job_id=job.id, progress={"epoch": 2, "loss": 0.5})
        redelivered = registry.mark_running(session=s, job_id=job.id)  # Celery redelivery after a crash
        assert redelivered.attempts == 2
    with session_factory.begin() as s:
        done = registry.mark_succeeded(
            session=s, job_id=job.id, result_version=version.id, metrics={"los": {"mae": 1.5}}
        )
    with session_factory() as s:
        done = registry.get_job(session=s, job_id=job.id)
        assert done.state == "succeeded" and done.result_version == version.id
        assert done.progress == {"epoch": 2, "of": 2, "loss": 0.5}
        assert done.metrics == {"los": {"mae": 1.5}}
        assert done.created_at <= done.started_at <= done.finished_at
        for call in (registry.mark_running, lambda **kw: registry.mark_failed(error="x", **kw)):
            with pytest.raises(Conflict):
                call(session=s, job_id=job.id)


def test_failures_are_recorded_and_counted(session):
    a = registry.create_job(session=session, kind="stage", request={})
    b = registry.create_job(session=session, kind="stage", request={})
    registry.mark_failed(session=session, job_id=a.id, error="E" * 20_000)
    registry.mark_running(session=session, job_id=b.id)
    failed = registry.get_job(session=session, job_id=a.id)
    assert failed.state == "failed" and len(failed.error) == jobs.MAX_ERROR_CHARS
    assert failed.finished_at is not None and failed.started_at is None
    assert registry.count_jobs_by_state(session=session) == {
        "queued": 0,
        "running": 1,
        "succeeded": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert [j.id for j in registry.list_jobs(session=session, state="failed")] == [a.id]
    with pytest.raises(Conflict, match="only a running job can succeed"):
        registry.mark_succeeded(session=session, job_id=a.id)
    with pytest.raises(JobNotFound):
        registry.get_job(session=session, job_id="nope")
    with pytest.raises(VersionNotFound):
        registry.create_job(session=session, kind="stage", request={}, parent_version="v404")
    with pytest.raises(ValueError, match="state must be one of"):
        registry.list_jobs(session=session, state="paused")
