"""The whole product, twice: on its embedded defaults (SQLite registry, in-process queue) and on the
production stack (the real PostgreSQL, the real Redis broker, a real Celery worker process that gets
only environment variables). predict -> upload a dataset -> POST /tasks -> the stage trains -> the new
task answers, `active` moved, and every earlier prediction on fixed payloads is byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from flame_core.benchmarks.synthetic_icu import generate
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.task_stats import record_task_statistics
from flame_core.training import TrainConfig, train
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import register_model
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.settings import Settings

from .conftest import PG_URL, start_celery_worker

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
REDIS_URL = os.environ.get("FLAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
LOS = {"name": "los", "modalities": ["vitals", "labs", "notes"], "head": {"type": "binary"}}


def labels_only(samples: list[dict], task: str) -> list[dict]:
    return [{**s, "labels": {task: s["labels"][task]}} for s in samples if s["labels"].get(task) is not None]


@pytest.fixture(scope="module", params=["embedded", "production"])
def product(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    scratch, worker, admin = None, None, None
    if request.param == "embedded":
        url, redis_url = f"sqlite:///{root / 'registry.db'}", None
    else:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()  # fails (never skips) without Redis
        admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
        scratch = f"flame_e2e_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        url, redis_url = (
            make_url(PG_URL).set(database=scratch).render_as_string(hide_password=False),
            REDIS_URL,
        )
    settings = Settings(
        database_url=url,
        artifact_root=root / "artifacts",
        auth_enabled=True,
        device="cpu",
        redis_url=redis_url,
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    icu = generate(seed=0, n=200)
    specs = icu.specs.subset(["mortality"])
    model = build_flame(TINY, specs)
    train(
        model,
        specs,
        labels_only(icu.splits["train"], "mortality"),
        labels_only(icu.splits["val"], "mortality"),
        TrainConfig(epochs=1, device="cpu", progress=False),
    )
    cl = ContinualFlame(model.eval())
    # calibration, conformal quantiles and shift statistics, as a stage or the bootstrap records them
    record_task_statistics(
        cl,
        labels_only(icu.splits["train"], "mortality"),
        labels_only(icu.splits["val"], "mortality"),
        ["mortality"],
    )
    register_model(
        session_factory=factory,
        store=LocalArtifactStore(settings.artifact_root),
        cl=cl,
        canary_samples=labels_only(icu.splits["val"], "mortality"),  # recorded here, replayed by the worker
    )
    with session_scope(factory) as s:
        _, predict_key = create_api_key(session=s, name="clinic", scopes=["predict"])
        _, admin_key = create_api_key(session=s, name="ops", scopes=["admin"])
    if redis_url is not None:
        worker = start_celery_worker(
            redis_url=REDIS_URL,
            database_url=url,
            artifact_root=str(settings.artifact_root),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    app = create_app(settings, reload_interval_s=3600)
    try:
        with TestClient(app) as client:
            yield client, app, icu, {"predict": predict_key, "admin": admin_key}
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        engine.dispose()
        if scratch is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_new_task_is_learned_and_served_without_changing_earlier_predictions(product):
    client, app, icu, keys = product
    payloads = [{"modalities": s["modalities"]} for s in icu.splits["test"][:5]]
    before = client.post("/predict/mortality", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert before.status_code == 200, before.text
    assert before.json()["model_version"] == "v1"
    for p in before.json()["predictions"]:  # what a clinician reads beside the score
        assert p["calibrated"]["coverage"] == 0.9 and p["abstain"] == (len(p["calibrated"]["set"]) != 1)
        assert p["shift"]["score"] >= 0 and p["shift"]["in_distribution"] == (
            p["shift"]["score"] <= p["shift"]["threshold"]
        )

    # A key without the train scope cannot start a stage.
    assert client.post("/tasks", json={}, headers=auth(keys["predict"])).status_code == 403
    assert client.post("/tasks", json={}).status_code == 401

    ids, digests, sizes = {}, {}, {}
    for split in ("train", "val"):
        body = "\n".join(json.dumps(s) for s in labels_only(icu.splits[split], "los"))
        r = client.post(
            "/datasets",
            content=body,
            params={"specs": json.dumps({"tasks": [LOS]})},
            headers={**auth(keys["admin"]), "content-type": "application/x-ndjson"},
        )
        assert r.status_code == 201, r.text
        ids[split], digests[split] = r.json()["dataset_id"], r.json()["digest"]
        sizes[split] = r.json()["n_samples"]
    r = client.post(
        "/tasks",
        headers=auth(keys["admin"]),
        json={
            "tasks": [LOS],
            "datasets": {"train": ids["train"], "validation": ids["val"]},
            "options": {"epochs": 1, "rank": "auto", "coverage": 0.8},
        },
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 180
    while True:
        job = client.get(f"/jobs/{job_id}", headers=auth(keys["admin"])).json()
        if job["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert job["state"] == "succeeded", job
    assert job["result_version"] == "v2"
    assert job["promotion"]["promoted"] and job["promotion"]["checked"] == {"mortality": "identical"}

    app.state.host.reload_if_changed()  # the watcher does this every few seconds in production
    models = client.get("/models", headers=auth(keys["admin"])).json()
    assert any(m["version"] == "v2" and "active" in m["aliases"] for m in models)

    # The new task's card, filled by the stage: its datasets' digests, test metrics, calibration.
    card = client.get("/tasks/los/card", headers=auth(keys["predict"]))
    assert card.status_code == 200, card.text
    card = card.json()
    assert card["sources"]["train"]["digest"] == digests["train"]
    assert card["sources"]["validation"]["digest"] == digests["val"]
    assert 0 <= card["metrics"]["auroc"] <= 1 and card["data"]["train"]["n"] > 0
    assert card["calibration"]["target_coverage"] == 0.8 and card["version"] == "v2" and card["cursor"] == 1
    los = client.post("/predict/los", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert los.status_code == 200, los.text
    assert los.json()["model_version"] == "v2" and los.json()["cursor"] == 1
    assert all(p["calibrated"]["coverage"] == 0.8 for p in los.json()["predictions"])  # the stage's option
    after = client.post("/predict/mortality", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert after.json()["model_version"] == "v2"
    assert json.dumps(after.json()["predictions"]) == json.dumps(before.json()["predictions"])

    # The same through the micro-batcher under concurrent load: each payload sent alone, 8 at a time,
    # mixed with `los` requests, lands in batches of any company and still answers the same bytes.
    def one(i: int) -> tuple[int, dict]:
        task = "los" if i % 4 == 3 else "mortality"
        r = client.post(f"/predict/{task}", json=payloads[i % 5], headers=auth(keys["predict"]))
        assert r.status_code == 200, r.text
        return i, r.json()

    # Score the validation cohort with the new task as a job (on Celery in production): one line each.
    r = client.post(
        "/predictions/batch", json={"dataset_id": ids["val"], "task": "los"}, headers=auth(keys["predict"])
    )
    assert r.status_code == 202, r.text
    scoring, deadline = r.json()["job_id"], time.monotonic() + 120
    while (job := client.get(f"/jobs/{scoring}", headers=auth(keys["admin"])).json())["state"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["state"] == "succeeded", job
    scored = client.get(f"/predictions/batch/{scoring}", headers=auth(keys["predict"])).text.splitlines()
    assert len(scored) == sizes["val"] and all(json.loads(x)["output"]["type"] == "binary" for x in scored)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(80)))
    for i, body in answers:
        if body["task"] == "mortality":
            assert json.dumps(body["predictions"][0]) == json.dumps(before.json()["predictions"][i % 5])


def test_rollback_serves_the_older_version(product):
    client, app, icu, keys = product
    payloads = [{"modalities": s["modalities"]} for s in icu.splits["test"][:3]]
    newer = client.post("/predict/mortality", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert newer.json()["model_version"] == "v2"
    r = client.post("/models/v1/activate", json={"reason": "rollback drill"}, headers=auth(keys["admin"]))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "v1" and r.json()["previous"] == "v2"
    app.state.host.reload_if_changed()
    older = client.post("/predict/mortality", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert older.json()["model_version"] == "v1"
    assert json.dumps(older.json()["predictions"]) == json.dumps(newer.json()["predictions"])
    gone = client.post("/predict/los", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert gone.status_code == 404 and "los" in gone.json()["error"]["message"]
