"""Alias moves reach replicas at once: two app instances on one REAL PostgreSQL database, polling
every hour (so only the notification can explain a swap). The replica that answers
`POST /models/{v}/activate` serves v before it answers; the other serves it within a second."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from flame_core.benchmarks import load_benchmark
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.cli.serve import register_model
from service.db import make_session_factory, session_scope
from service.registry import service as registry
from service.settings import Settings

from .test_predict import tiny_model

BOUND_S = 1.0


@pytest.fixture
def replicas(scratch_pg, tmp_path):  # type: ignore[no-untyped-def]
    url, engine = scratch_pg
    factory, store = make_session_factory(engine), LocalArtifactStore(tmp_path / "artifacts")
    data = load_benchmark("synthetic-icu", n=50)
    specs = data.specs.subset(["mortality"])
    for seed in (0, 1):
        register_model(session_factory=factory, store=store, cl=tiny_model(specs, seed))
    with session_scope(factory) as s:
        registry.move_alias(session=s, alias="active", version="v1", moved_by="test")
    settings = Settings(database_url=url, artifact_root=store.root, auth_enabled=False, device="cpu")
    payload = {"modalities": data.splits["test"][0]["modalities"]}
    with (
        TestClient(create_app(settings, reload_interval_s=3600)) as a,
        TestClient(create_app(settings, reload_interval_s=3600)) as b,
    ):
        for client in (a, b):
            assert client.app.state.alias_listener.listening.wait(10), "the listener never connected"
        yield a, b, payload


def _served(client: TestClient, payload: dict) -> str:
    r = client.post("/predict/mortality", json=payload)
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def _seconds_until_serving(client: TestClient, version: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < 5 * BOUND_S:
        held = client.app.state.host.current
        if held is not None and held.id == version:
            return time.monotonic() - start
        time.sleep(0.01)
    pytest.fail(f"the other replica still serves {held.id if held else None}, not {version}", pytrace=False)


def test_activate_serves_on_the_answering_replica_at_once_and_on_the_others_within_a_second(replicas):  # type: ignore[no-untyped-def]
    a, b, payload = replicas
    assert _served(a, payload) == _served(b, payload) == "v1"

    r = a.post("/models/v2/activate", json={"reason": "roll forward"})
    assert r.status_code == 200, r.text
    assert r.json()["serving"] == "v2" and r.json()["previous"] == "v1"
    assert _served(a, payload) == "v2"  # no wait at all on the replica that answered
    assert _seconds_until_serving(b, "v2") < BOUND_S
    assert _served(b, payload) == "v2"

    r = b.post("/models/v1/activate", json={"reason": "rollback"})  # and back, the other way round
    assert r.status_code == 200 and r.json()["serving"] == "v1"
    assert _served(b, payload) == "v1"
    assert _seconds_until_serving(a, "v1") < BOUND_S
