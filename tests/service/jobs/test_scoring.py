"""Batch scoring over HTTP on the in-process queue: a 5,000-sample dataset scored by a job, one line
per sample (a sample the task cannot read gets an error line), the same bytes a request gets, one
audit row per scored sample, and clear errors for what cannot be scored or downloaded."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from flame_core.benchmarks import load_benchmark
from service.app import create_app
from service.cli.serve import build_demo_model
from service.inference.models import PredictionAudit

from ..conftest import serving_registry

N = 5000


@pytest.fixture(scope="module")
def env(tmp_path_factory):  # type: ignore[no-untyped-def]
    cl, _ = build_demo_model(n=300, epochs=0)
    settings, engine, factory = serving_registry(tmp_path_factory.mktemp("scoring"), cl, auth_enabled=False)
    data = load_benchmark("synthetic-icu", n=N, seed=3)
    samples = [
        {"id": s["id"], "modalities": s["modalities"]} for split in data.splits.values() for s in split
    ]
    cxr = next(s["modalities"]["cxr"] for s in samples if "cxr" in s["modalities"])
    samples[9] = {"id": "cxr-only", "modalities": {"cxr": cxr}}  # a valid sample `los` cannot read
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        yield client, factory, samples
    client.app.state.job_queue.stop()
    engine.dispose()


def _wait(client: TestClient, job_id: str) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_a_dataset_of_5000_is_scored_one_line_per_sample(env) -> None:  # type: ignore[no-untyped-def]
    client, factory, samples = env
    body = "".join(json.dumps(s) + "\n" for s in samples)
    up = client.post("/datasets", content=body, headers={"content-type": "application/x-ndjson"})
    assert up.status_code == 201, up.text
    r = client.post("/predictions/batch", json={"dataset_id": up.json()["dataset_id"], "task": "los"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = _wait(client, job_id)
    assert job["state"] == "succeeded", job
    assert job["metrics"]["samples"] == len(samples) and job["metrics"]["version"] == "v1"
    got = client.get(f"/predictions/batch/{job_id}")
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in got.text.splitlines()]
    assert len(lines) == len(samples) and [x["line"] for x in lines] == list(range(1, len(samples) + 1))
    errors = [x for x in lines if "error" in x]
    assert job["metrics"]["errors"] == len(errors) >= 1
    assert all(x["error"]["code"] == "sample_invalid" for x in errors)
    with factory() as s:
        rows = s.scalar(select(func.count()).where(PredictionAudit.request_id.like(f"{job_id[:36]}-%")))
    assert rows == job["metrics"]["scored"] == len(samples) - len(errors)
    # What a request for the same sample gets, byte for byte (ids aside).
    for i in (0, 1, 2500, N - 1):
        online = client.post("/predict/los", json=samples[i]).json()["predictions"][0]
        batch = {k: v for k, v in lines[i].items() if k != "line"}
        assert json.dumps(batch, sort_keys=True) == json.dumps(online, sort_keys=True)
        assert batch["calibrated"] is not None and batch["shift"] is not None


def test_what_cannot_be_scored_or_downloaded_is_a_clear_error(env) -> None:  # type: ignore[no-untyped-def]
    client, _, samples = env
    up = client.post("/datasets", content=json.dumps(samples[0]) + "\n").json()
    assert (
        client.post("/predictions/batch", json={"dataset_id": up["dataset_id"], "task": "nope"}).status_code
        == 404
    )
    missing = {"dataset_id": "0" * 36, "task": "mortality"}
    assert client.post("/predictions/batch", json=missing).status_code == 404
    bad = client.post(
        "/predictions/batch", json={"dataset_id": up["dataset_id"], "task": "mortality", "x": 1}
    )
    assert bad.status_code == 422
    assert client.get("/predictions/batch/" + "0" * 36).status_code == 404
