"""Training does not lose to traffic: on the embedded defaults (SQLite, in-process queue, the real
app with its audit writer), a stage submitted while predictions flow as fast as clients can send them
succeeds, every prediction answers 200 meanwhile, and each has its audit row."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from flame_core.config import FlameConfig
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.cli.serve import build_demo_model, demo_validation, register_model
from service.db import load_models, make_engine, make_session_factory
from service.inference.models import PredictionAudit
from service.settings import Settings

from .conftest import only_labels

TINY = FlameConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2)
READMISSION = {"name": "readmission", "modalities": ["labs", "cxr"], "head": {"type": "binary"}}
CLIENTS = 4


def test_a_stage_succeeds_while_predictions_flow_at_full_load(tmp_path, icu):  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        artifact_root=tmp_path / "artifacts",
        auth_enabled=False,
        device="cpu",
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    cl, _ = build_demo_model(n=200, epochs=0, config=TINY)
    register_model(
        session_factory=factory,
        store=LocalArtifactStore(settings.artifact_root),
        cl=cl,
        canary_samples=demo_validation(n=200),
    )
    sample = {"modalities": {k: v for k, v in icu.splits["test"][0]["modalities"].items()}}
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    with TestClient(create_app(settings, reload_interval_s=3600)) as client:

        def hammer() -> None:
            while not stop.is_set():
                statuses[client.post("/predict/mortality", json=sample).status_code] += 1

        ids = {}
        for split in ("train", "val"):
            lines = "\n".join(json.dumps(s) for s in only_labels(icu.splits[split], ["readmission"]))
            r = client.post(
                "/datasets",
                content=lines,
                params={"specs": json.dumps({"tasks": [READMISSION]})},
                headers={"content-type": "application/x-ndjson"},
            )
            assert r.status_code == 201, r.text
            ids[split] = r.json()["dataset_id"]
        threads = [threading.Thread(target=hammer) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # the load is on before the stage arrives
            body = {
                "tasks": [READMISSION],
                "datasets": {"train": ids["train"], "validation": ids["val"]},
                "options": {"epochs": 2, "refit_epochs": 1},
            }
            r = client.post("/tasks", json=body)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            deadline = time.monotonic() + 300
            job = client.get(f"/jobs/{job_id}").json()
            while job["state"] in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(0.5)
                job = client.get(f"/jobs/{job_id}").json()
            during = sum(statuses.values())
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert job["state"] == "succeeded", job
        assert set(statuses) == {200}, statuses  # no 5xx, no `database is locked`, nothing dropped
        assert during >= 50, statuses  # the predictions really flowed while the stage ran
        served = time.monotonic() + 2.0  # this replica reloads as the job ends (well inside 1 s)
        r = client.post("/predict/readmission", json=sample)
        while r.status_code == 404 and time.monotonic() < served:
            time.sleep(0.05)
            r = client.post("/predict/readmission", json=sample)
        assert r.status_code == 200 and r.json()["model_version"] == job["result_version"], r.text
        ok_after = 1  # the readmission prediction (404s before it are not predictions)
        client.app.state.audit_writer.flush()
        with factory() as s:
            audited = s.scalar(select(func.count()).select_from(PredictionAudit))
    engine.dispose()
    assert audited == statuses[200] + ok_after  # one audit row per answered prediction, none lost
