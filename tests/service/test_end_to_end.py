"""The whole product on its embedded defaults (SQLite registry, local artifacts, in-process queue):
predict -> upload a dataset -> POST /tasks -> the stage trains -> the new task answers, `active`
moved, and every earlier prediction on fixed payloads is byte-identical to before the stage."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from flame_core.benchmarks.synthetic_icu import generate
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.training import TrainConfig, train
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import register_model
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.settings import Settings

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
LOS = {"name": "los", "modalities": ["vitals", "labs", "notes"], "head": {"type": "binary"}}


def labels_only(samples: list[dict], task: str) -> list[dict]:
    return [{**s, "labels": {task: s["labels"][task]}} for s in samples if s["labels"].get(task) is not None]


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_root=root / "artifacts",
        auth_enabled=True,
        device="cpu",
        redis_url=None,
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
    register_model(
        session_factory=factory,
        store=LocalArtifactStore(settings.artifact_root),
        cl=ContinualFlame(model.eval()),
    )
    with session_scope(factory) as s:
        _, predict_key = create_api_key(session=s, name="clinic", scopes=["predict"])
        _, admin_key = create_api_key(session=s, name="ops", scopes=["admin"])
    app = create_app(settings, reload_interval_s=3600)
    with TestClient(app) as client:
        yield client, app, icu, {"predict": predict_key, "admin": admin_key}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_new_task_is_learned_and_served_without_changing_earlier_predictions(product):
    client, app, icu, keys = product
    payloads = [{"modalities": s["modalities"]} for s in icu.splits["test"][:5]]
    before = client.post("/predict/mortality", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert before.status_code == 200, before.text
    assert before.json()["model_version"] == "v1"

    # A key without the train scope cannot start a stage.
    assert client.post("/tasks", json={}, headers=auth(keys["predict"])).status_code == 403
    assert client.post("/tasks", json={}).status_code == 401

    ids = {}
    for split in ("train", "val"):
        body = "\n".join(json.dumps(s) for s in labels_only(icu.splits[split], "los"))
        r = client.post(
            "/datasets",
            content=body,
            params={"specs": json.dumps({"tasks": [LOS]})},
            headers={**auth(keys["admin"]), "content-type": "application/x-ndjson"},
        )
        assert r.status_code == 201, r.text
        ids[split] = r.json()["dataset_id"]
    r = client.post(
        "/tasks",
        headers=auth(keys["admin"]),
        json={
            "tasks": [LOS],
            "datasets": {"train": ids["train"], "validation": ids["val"]},
            "options": {"epochs": 1, "rank": "auto"},
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

    app.state.host.reload_if_changed()  # the watcher does this every few seconds in production
    models = client.get("/models", headers=auth(keys["admin"])).json()
    assert any(m["version"] == "v2" and "active" in m["aliases"] for m in models)

    los = client.post("/predict/los", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert los.status_code == 200, los.text
    assert los.json()["model_version"] == "v2" and los.json()["cursor"] == 1
    after = client.post("/predict/mortality", json={"instances": payloads}, headers=auth(keys["predict"]))
    assert after.json()["model_version"] == "v2"
    assert json.dumps(after.json()["predictions"]) == json.dumps(before.json()["predictions"])
