"""The production stack past one machine: artifacts only in an S3-compatible object server.

The real PostgreSQL, the real Redis broker, a real Celery worker process and the api, each with its
OWN artifact cache and no shared artifact folder; the registry's first model is written by a third
"host". upload -> stage on the worker -> the new task is served by the api, earlier predictions are
byte-identical; then an object overwritten in the bucket is refused by its digest, with a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import redis
from fastapi.testclient import TestClient

from flame_core.benchmarks.synthetic_icu import generate
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.task_stats import record_task_statistics
from flame_core.training import TrainConfig, train
from service.app import create_app
from service.artifact_stores import open_store
from service.auth.service import create_api_key
from service.cli.serve import register_model
from service.db import make_session_factory, session_scope
from service.registry import service as registry
from service.settings import Settings

from .conftest import start_celery_worker
from .s3_server import client, keys, s3_bucket, s3_endpoint, s3_env  # noqa: F401

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
REDIS_URL = os.environ.get("FLAME_TEST_S3_REDIS_URL", "redis://127.0.0.1:6379/12")
LOS = {"name": "los", "modalities": ["vitals", "labs", "notes"], "head": {"type": "binary"}}


def labels_only(samples: list[dict], task: str) -> list[dict]:
    return [{**s, "labels": {task: s["labels"][task]}} for s in samples if s["labels"].get(task) is not None]


def blobs(root: Path) -> set[str]:
    """The digests of the content-addressed files under a store folder (none if it does not exist)."""
    return {p.parent.name + p.name for p in root.glob("??/*") if p.is_file()}


def wait_job(client: TestClient, job_id: str, token: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}", headers=auth(token)).json()
        if job["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_stage_on_a_worker_with_artifacts_only_in_the_object_store(  # noqa: PLR0915
    s3_bucket,  # noqa: F811
    s3_endpoint,  # noqa: F811
    scratch_pg,
    tmp_path,
):
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()  # fails (never skips) without Redis
    url, engine = scratch_pg
    factory = make_session_factory(engine)
    artifact_url = f"s3://{s3_bucket}/flame"

    def host_settings(name: str, **extra: object) -> Settings:
        root = tmp_path / name
        return Settings(
            home=root,
            database_url=url,
            artifact_url=artifact_url,
            artifact_cache=root / "cache",
            artifact_root=root / "artifacts",  # never written: nothing may fall back to it
            device="cpu",
            **extra,  # type: ignore[arg-type]
        )

    # A third host registers v1 (with canaries the worker's promotion gate replays).
    icu = generate(seed=0, n=200)
    specs = icu.specs.subset(["mortality"])
    model = build_flame(TINY, specs)
    train_m, val_m = (
        labels_only(icu.splits["train"], "mortality"),
        labels_only(icu.splits["val"], "mortality"),
    )
    train(model, specs, train_m, val_m, TrainConfig(epochs=1, device="cpu", progress=False))
    cl = ContinualFlame(model.eval())
    record_task_statistics(cl, train_m, val_m, ["mortality"])
    boot = open_store(host_settings("boot"))
    register_model(session_factory=factory, store=boot, cl=cl, canary_samples=val_m)
    with session_scope(factory) as s:
        _, predict_key = create_api_key(session=s, name="clinic", scopes=["predict"])
        _, admin_key = create_api_key(session=s, name="ops", scopes=["admin"])

    worker_root = tmp_path / "worker"
    worker_root.mkdir()
    log = open(worker_root / "celery.log", "wb")  # noqa: SIM115 - closed in finally
    worker = start_celery_worker(
        redis_url=REDIS_URL,
        database_url=url,
        artifact_root=str(worker_root / "artifacts"),
        extra_env={
            **s3_env(s3_endpoint),
            "FLAME_ARTIFACT_URL": artifact_url,
            "FLAME_ARTIFACT_CACHE": str(worker_root / "cache"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = host_settings("api", redis_url=REDIS_URL, auth_enabled=True)
    app = create_app(api, reload_interval_s=3600)
    try:
        with TestClient(app) as client_:
            payloads = [{"modalities": s["modalities"]} for s in icu.splits["test"][:5]]
            before = client_.post(
                "/predict/mortality", json={"instances": payloads}, headers=auth(predict_key)
            )
            assert before.status_code == 200 and before.json()["model_version"] == "v1", before.text

            ids, digests = {}, {}
            for split in ("train", "val"):
                r = client_.post(
                    "/datasets",
                    content="\n".join(json.dumps(s) for s in labels_only(icu.splits[split], "los")),
                    params={"specs": json.dumps({"tasks": [LOS]})},
                    headers={**auth(admin_key), "content-type": "application/x-ndjson"},
                )
                assert r.status_code == 201, r.text
                ids[split], digests[split] = r.json()["dataset_id"], r.json()["digest"]
            r = client_.post(
                "/tasks",
                headers=auth(admin_key),
                json={
                    "tasks": [LOS],
                    "datasets": {"train": ids["train"], "validation": ids["val"]},
                    "options": {"epochs": 1},
                },
            )
            assert r.status_code == 202, r.text
            job = wait_job(client_, r.json()["job_id"], admin_key, timeout=240)
            assert job["state"] == "succeeded", (job, (worker_root / "celery.log").read_text()[-3000:])
            assert job["result_version"] == "v2"
            assert job["promotion"]["checked"] == {"mortality": "identical"}

            app.state.host.reload_if_changed()  # the alias watcher does this in production
            los = client_.post("/predict/los", json={"instances": payloads}, headers=auth(predict_key))
            assert los.status_code == 200 and los.json()["model_version"] == "v2", los.text
            after = client_.post(
                "/predict/mortality", json={"instances": payloads}, headers=auth(predict_key)
            )
            assert after.json()["model_version"] == "v2"
            assert json.dumps(after.json()["predictions"]) == json.dumps(before.json()["predictions"])

            # Every artifact lives in the bucket; no host has a blob outside its own cache.
            with factory() as s:
                files = {
                    v: {f["sha256"] for f in registry.get_version(session=s, version=v).manifest}
                    for v in ("v1", "v2")
                }
            in_bucket = {k.removeprefix("flame/").replace("/", "") for k in keys(s3_endpoint, s3_bucket)}
            assert files["v1"] | files["v2"] | set(digests.values()) <= in_bucket
            for name in ("boot", "api", "worker"):
                assert blobs(tmp_path / name / "artifacts") == set(), name
            worker_cache, api_cache = blobs(worker_root / "cache"), blobs(tmp_path / "api" / "cache")
            assert set(digests.values()) <= worker_cache  # downloaded from the bucket by the worker
            assert files["v1"] <= worker_cache  # the parent, read from the bucket to train on
            assert files["v2"] <= api_cache  # the stage's new files, downloaded by the api to serve them
            assert not (files["v2"] - files["v1"]) & blobs(tmp_path / "boot" / "cache")

            # An object overwritten in the bucket is refused by its digest, with a clear error.
            cohort = labels_only(icu.splits["test"], "los")
            with session_scope(factory) as s:
                dataset = registry.create_dataset(
                    session=s,
                    store=boot,
                    name="cohort",
                    content="\n".join(json.dumps(x) for x in cohort).encode(),
                    n_samples=len(cohort),
                )
                cohort_id, cohort_digest = dataset.id, dataset.digest
            key = f"flame/{cohort_digest[:2]}/{cohort_digest[2:]}"
            client(s3_endpoint).put_object(Bucket=s3_bucket, Key=key, Body=b'{"tampered": true}\n')
            r = client_.post(
                "/predictions/batch", json={"dataset_id": cohort_id, "task": "los"}, headers=auth(predict_key)
            )
            assert r.status_code == 202, r.text
            job = wait_job(client_, r.json()["job_id"], admin_key, timeout=120)
            assert job["state"] == "failed", job
            assert f"artifact {cohort_digest} in s3://{s3_bucket}/{key} does not match its sha256" in str(
                job["error"]
            ), job
            assert cohort_digest not in blobs(worker_root / "cache")  # never cached
            assert worker.poll() is None, "the Celery worker exited"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
