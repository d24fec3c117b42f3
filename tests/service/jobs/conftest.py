"""Fixtures for the jobs tests: a tiny pretrained FLAME registered as v1, and an app with the routers.

The model is pretrained once per test session (1 epoch, synthetic-icu n=200, task mortality); each
test registers it afresh as v1 on clean tables of the real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flame_core.benchmarks.synthetic_icu import generate
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.training import TrainConfig, train
from flame_core.validation import validate_dataset
from service.datasets.router import router as datasets_router
from service.errors import install_error_handlers
from service.jobs.queue import LocalQueue
from service.jobs.router import router as jobs_router
from service.registry import service as registry
from service.registry.router import router as registry_router
from service.settings import Settings
from service.versioning import stage_records, version_files

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
LOS = {"name": "los", "modalities": ["vitals", "labs", "notes"], "head": {"type": "binary"}}


def only_labels(samples: list[dict], tasks: list[str]) -> list[dict]:
    return [
        {**s, "labels": {t: s["labels"][t] for t in tasks if s["labels"].get(t) is not None}} for s in samples
    ]


@pytest.fixture(scope="session")
def icu() -> Any:
    return generate(seed=0, n=200)


@pytest.fixture(scope="session")
def pretrained(icu) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Stage 0 of a tiny ContinualFlame: its files and registry records, made once."""
    torch.manual_seed(0)
    specs = icu.specs.subset(["mortality"])
    tr = validate_dataset(only_labels(icu.splits["train"], ["mortality"]), specs, ["mortality"])
    va = validate_dataset(only_labels(icu.splits["val"], ["mortality"]), specs, ["mortality"])
    model = build_flame(TINY, specs)
    train(model, specs, tr, va, TrainConfig(epochs=1, device="cpu", progress=False, seed=0))
    cl = ContinualFlame(model)
    return {"files": version_files(cl), "records": stage_records(cl, 0), "cl": copy.deepcopy(cl)}


def register_pretrained(session, store, pretrained, **extra) -> str:  # type: ignore[no-untyped-def]
    """Register the pretrained stage-0 model as a root version (v1 unless `version_id` says);
    returns its id."""
    components, tasks, modalities = pretrained["records"]
    version = registry.register_version(
        session=session,
        store=store,
        parent=None,
        files=pretrained["files"],
        moved_by="test",
        components=components,
        tasks=tasks,
        modalities=modalities,
        reason="stage 0",
        **extra,
    )
    return version.id


@pytest.fixture
def v1(session_factory, store, pretrained) -> str:  # type: ignore[no-untyped-def]
    with session_factory.begin() as s:
        return register_pretrained(s, store, pretrained)


def make_app(settings: Settings, session_factory, store) -> FastAPI:  # type: ignore[no-untyped-def]
    """The routers on a bare app with the lifespan state and the error handlers the real app has."""
    app = FastAPI()
    app.state.settings, app.state.session_factory, app.state.store = settings, session_factory, store
    app.state.job_queue = LocalQueue(session_factory=session_factory, store=store, settings=settings)
    app.include_router(jobs_router)
    app.include_router(registry_router)
    app.include_router(datasets_router)
    install_error_handlers(app)
    return app


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        database_url="sqlite://", artifact_root=tmp_path / "artifacts", auth_enabled=False, device="cpu"
    )


@pytest.fixture
def client(settings, session_factory, store):  # type: ignore[no-untyped-def]
    with TestClient(make_app(settings, session_factory, store)) as c:
        yield c
    drain(c)  # no job may outlive the tables it writes to
    c.app.state.job_queue.stop()


def drain(client: TestClient) -> None:
    """Wait until the app's in-process queue has run every job it holds."""
    client.app.state.job_queue.join()  # type: ignore[attr-defined]


def stage_job(session_factory, store, icu, *, parent: str = "v1", task: dict | None = None, **options) -> str:  # type: ignore[no-untyped-def]
    """A queued stage job for `task` (default LOS) on the icu train/val splits; returns its id."""
    task = task or LOS
    ids = {}
    with session_factory.begin() as s:
        for split in ("train", "val"):
            samples = [
                {**x, "labels": {task["name"]: x["labels"]["los"]}}
                for x in icu.splits[split]
                if x["labels"].get("los") is not None
            ]
            data = "\n".join(json.dumps(x) for x in samples).encode()
            ids[split] = registry.create_dataset(
                session=s, store=store, name=split, content=data, n_samples=len(samples)
            ).id
        request = {
            "tasks": [task],
            "datasets": {"train": ids["train"], "validation": ids["val"]},
            "options": {"epochs": 1, "seed": 0, **options},
        }
        return registry.create_job(session=s, kind="stage", request=request, parent_version=parent).id


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll `predicate()` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(every)


def job_row(session_factory, job_id: str):  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return registry.get_job(session=s, job_id=job_id)


@pytest.fixture
def v1_gated(session_factory, store, pretrained, icu) -> str:  # type: ignore[no-untyped-def]
    """v1 as the bootstrap registers a root: with canaries for its task (mortality) for the gate."""
    from service.cli.serve import register_model

    canaries = only_labels(icu.splits["val"], ["mortality"])
    cl = copy.deepcopy(pretrained["cl"])
    return register_model(session_factory=session_factory, store=store, cl=cl, canary_samples=canaries).id


def upload(client, samples, specs=None, name="data") -> str:  # type: ignore[no-untyped-def]
    """POST /datasets (raw JSONL, optional inline task specs); the dataset id."""
    body = "\n".join(json.dumps(s) for s in samples)
    params = {"name": name, **({"specs": json.dumps(specs)} if specs else {})}
    r = client.post(
        "/datasets", content=body, params=params, headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 201, r.text
    return r.json()["dataset_id"]


def stage_request(client, icu, task: dict, **options) -> dict:  # type: ignore[no-untyped-def]
    """A POST /tasks body for `task` with train/val datasets labelled for it (uploaded now)."""
    name = task["name"]
    ids = {
        split: upload(client, only_labels(icu.splits[split], [name]), {"tasks": [task]}, f"{name}-{split}")
        for split in ("train", "val")
    }
    return {
        "tasks": [task],
        "datasets": {"train": ids["train"], "validation": ids["val"]},
        "options": {"epochs": 1, "seed": 0, **options},
    }


def host_outputs(store, session_factory, version: str, task: str, samples: list[dict]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The task's raw outputs on `samples` from `version` loaded exactly as the serving host loads it."""
    from flame_core.validation import validate_sample
    from service.inference.host import load_loaded_version

    with session_factory() as s:
        row = registry.get_version(session=s, version=version)
    loaded = load_loaded_version(store, row, torch.device("cpu"))
    canonical = [validate_sample({"modalities": x["modalities"]}, loaded.specs, [task]) for x in samples]
    return loaded.forward(loaded.prepare(canonical, task), task).outputs[task]
