"""Restarts on the embedded defaults (SQLite file, in-process queue), through the real app lifespan:
a server stopped mid-stage hands its job back and the next start finishes it; a job whose server
died (its heartbeat stale) is run again when a server starts. Either way: one new version."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.jobs.models import Job
from service.orm import utcnow
from service.registry import service as registry
from service.settings import Settings

from .conftest import job_row, register_pretrained, stage_job, wait_for


@pytest.fixture
def embedded(tmp_path, pretrained):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(url)
    load_models().create_all(engine)
    factory, store = make_session_factory(engine), LocalArtifactStore(tmp_path / "artifacts")
    with session_scope(factory) as s:
        register_pretrained(s, store, pretrained)
    settings = Settings(
        database_url=url,
        artifact_root=store.root,
        auth_enabled=False,
        device="cpu",
        job_heartbeat_timeout_s=2,
    )
    yield settings, factory, store
    engine.dispose()


def _finished(factory, job_id: str):  # type: ignore[no-untyped-def]
    job = job_row(factory, job_id)
    return job if job.state in ("succeeded", "failed", "cancelled") else None


def _serves_los(client: TestClient, icu) -> str | None:  # type: ignore[no-untyped-def]
    r = client.post("/predict/los", json={"modalities": icu.splits["test"][0]["modalities"]})
    return r.json()["model_version"] if r.status_code == 200 else None


def _mortality(client: TestClient, icu) -> list:  # type: ignore[no-untyped-def]
    payloads = [{"modalities": s["modalities"]} for s in icu.splits["test"][:8]]
    r = client.post("/predict/mortality", json={"instances": payloads})
    assert r.status_code == 200, r.text
    return [(p["output"], p["routing"]) for p in r.json()["predictions"]]


def test_a_server_stopped_mid_stage_hands_the_job_back_and_the_next_start_finishes_it(embedded, icu):  # type: ignore[no-untyped-def]
    settings, factory, store = embedded
    job_id = stage_job(factory, store, icu, epochs=12, patience=100, refit_epochs=0)  # queued, in no queue
    with TestClient(create_app(settings, reload_interval_s=3600)):
        # The start re-enqueued the job it found queued; stop the server during its training.
        wait_for(lambda: job_row(factory, job_id).progress.get("epoch"), 120, "the first epoch")
    job = job_row(factory, job_id)
    assert (job.state, job.attempts, job.heartbeat_at) == ("queued", 1, None), job.error
    assert job.progress["epoch"] < 12

    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        v1, mortality = client.app.state.host.current, _mortality(client, icu)
        assert v1.id == "v1"
        job = wait_for(lambda: _finished(factory, job_id), 180, "the job to finish")
        assert (job.state, job.attempts, job.result_version) == ("succeeded", 2, "v2"), job.error
        # The replica that ran the stage serves it (its host reloads after the job, not at a poll),
        # reusing v1's cursor model for the earlier task, whose answers keep their bytes.
        assert wait_for(lambda: _serves_los(client, icu), 5, "the new task to be served") == "v2"
        assert client.app.state.host.current.cursor_models[0] is v1.cursor_models[0]
        assert _mortality(client, icu) == mortality
    with factory() as s:
        assert [v.id for v in registry.list_versions(session=s)] == ["v1", "v2"]


def test_a_job_whose_server_died_runs_again_when_a_server_starts(embedded, icu):  # type: ignore[no-untyped-def]
    settings, factory, store = embedded
    job_id = stage_job(factory, store, icu, refit_epochs=0)
    with session_scope(factory) as s:  # the dead server's attempt: claimed, then silent for a minute
        registry.claim_job(session=s, job_id=job_id, stale_before=utcnow(), max_attempts=3)
        s.get(Job, job_id).heartbeat_at = utcnow() - timedelta(minutes=1)
    with TestClient(create_app(settings, reload_interval_s=3600)):
        job = wait_for(lambda: _finished(factory, job_id), 180, "the job to finish")
    assert (job.state, job.attempts, job.result_version) == ("succeeded", 2, "v2"), job.error
    with factory() as s:
        assert [v.id for v in registry.list_versions(session=s)] == ["v1", "v2"]
