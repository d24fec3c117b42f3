"""Two POST /tasks for different new tasks, submitted together, both end up served: the second
stage stacks on the first (its parent is resolved when it starts, under the stage lock) and every
earlier task answers byte for byte as before. On the in-process queue (SQLite and PostgreSQL) and
on two REAL Celery worker processes (PostgreSQL + Redis) that would otherwise run them at once."""

from __future__ import annotations

import subprocess
import time

import torch
from fastapi.testclient import TestClient

from service.artifacts import LocalArtifactStore
from service.cli.serve import register_model
from service.db import make_session_factory
from service.registry import service as registry
from service.settings import Settings

from ..conftest import start_celery_worker
from .conftest import LOS, drain, host_outputs, make_app, only_labels, stage_request
from .test_celery import REDIS_URL, _require_redis

READMISSION = {"name": "readmission", "modalities": ["labs", "cxr"], "head": {"type": "binary"}}


def _submit_both(client, icu) -> list[str]:  # type: ignore[no-untyped-def]
    bodies = [stage_request(client, icu, task) for task in (LOS, READMISSION)]
    ids = []
    for body in bodies:
        r = client.post("/tasks", json=body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["job_id"])
    return ids


def _check_stacked(factory, store, icu, job_ids) -> None:  # type: ignore[no-untyped-def]
    with factory() as s:
        jobs = sorted((registry.get_job(session=s, job_id=j) for j in job_ids), key=lambda j: j.started_at)
        assert [j.state for j in jobs] == ["succeeded", "succeeded"], [j.error for j in jobs]
        first, second = jobs
        assert first.parent_version == "v1" and second.parent_version == first.result_version
        assert second.started_at >= first.finished_at  # one stage after the other
        active = registry.resolve_alias(session=s).id
        assert active == second.result_version == "v3"
        served = [t.name for t in registry.list_tasks(session=s, version=active)]
        assert sorted(served) == ["los", "mortality", "readmission"]
        assert all(j.metrics["promotion"]["promoted"] for j in jobs)
        earlier = second.metrics["promotion"]["checked"]
    first_task = "los" if "los" in earlier else "readmission"
    assert earlier == {"mortality": "identical", first_task: "identical"}  # replayed in the second stage
    fixed = icu.splits["test"][:16]
    for task, introduced in (("mortality", "v1"), (first_task, "v2")):
        before = host_outputs(store, factory, introduced, task, fixed)
        after = host_outputs(store, factory, "v3", task, fixed)
        assert torch.equal(before, after), task


def test_two_stages_submitted_together_stack_in_process(client, session_factory, store, v1_gated, icu):  # type: ignore[no-untyped-def]
    job_ids = _submit_both(client, icu)
    drain(client)
    _check_stacked(session_factory, store, icu, job_ids)


def test_two_stages_on_two_celery_workers_stack(scratch_pg, tmp_path, icu, pretrained):  # type: ignore[no-untyped-def]
    _require_redis()
    url, engine = scratch_pg
    factory, store = make_session_factory(engine), LocalArtifactStore(tmp_path / "artifacts")
    register_model(
        session_factory=factory,
        store=store,
        cl=pretrained["cl"],
        canary_samples=only_labels(icu.splits["val"], ["mortality"]),
    )
    settings = Settings(
        redis_url=REDIS_URL, database_url=url, artifact_root=store.root, auth_enabled=False, device="cpu"
    )
    workers = [
        start_celery_worker(
            redis_url=REDIS_URL,
            database_url=url,
            artifact_root=str(store.root),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        with TestClient(make_app(settings, factory, store)) as client:
            job_ids = _submit_both(client, icu)
        deadline, states = time.monotonic() + 300, []
        while time.monotonic() < deadline:
            time.sleep(1)
            assert all(w.poll() is None for w in workers), "a Celery worker exited early"
            with factory() as s:
                states = [registry.get_job(session=s, job_id=j).state for j in job_ids]
            if all(state in ("succeeded", "failed") for state in states):
                break
        _check_stacked(factory, store, icu, job_ids)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                out, _ = w.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                out, _ = w.communicate()
            print(out[-3000:])
