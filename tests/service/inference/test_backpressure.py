"""Backpressure, deadlines and priority over HTTP, on a real app: a full queue answers 429 with
Retry-After, an expired deadline 504 (nothing computed), `stat` needs its scope, and predictions
under concurrent load - while `active` moves between two versions - are bit-equal to each request
sent alone on its own version."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from flame_core.benchmarks import load_benchmark
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import register_model
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.registry.versions import move_alias_to
from service.settings import Settings

from .test_batcher import TINY
from .test_predict import tiny_model

TASK = "mortality"


@pytest.fixture(scope="module")
def env(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("backpressure")
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_root=root / "artifacts",
        device="cpu",
        max_batch_size=1,  # one forward per request: the queue fills under a burst
        max_queue_depth=2,
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    data = load_benchmark("synthetic-icu", n=120)
    specs = data.specs.subset([TASK])
    store = LocalArtifactStore(settings.artifact_root)
    for seed in (0, 1):  # v1, then v2 (active)
        register_model(session_factory=factory, store=store, cl=tiny_model(specs, seed))
    keys = {}
    with session_scope(factory) as s:
        for name, scopes in (("predict", ["predict"]), ("stat", ["predict", "stat"]), ("admin", ["admin"])):
            keys[name] = {"Authorization": f"Bearer {create_api_key(session=s, name=name, scopes=scopes)[1]}"}
    payloads = [
        {"id": f"p{i}", "modalities": s["modalities"]} for i, s in enumerate(data.splits["test"][:12])
    ]
    app = create_app(settings, reload_interval_s=3600)
    with TestClient(app) as client:
        yield {"client": client, "app": app, "keys": keys, "payloads": payloads, "factory": factory}
    engine.dispose()
    assert TINY.d_model == 16  # the models are the batcher tests' tiny config


def post(env, body, key="predict", **headers):  # type: ignore[no-untyped-def]
    return env["client"].post(
        f"/predict/{TASK}", content=json.dumps(body), headers={**env["keys"][key], **headers}
    )


def test_a_burst_beyond_the_queue_gets_429_with_retry_after(env) -> None:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: post(env, env["payloads"][i % 12]), range(400)))
    statuses = {r.status_code for r in answers}
    assert statuses <= {200, 429}, statuses
    refused = [r for r in answers if r.status_code == 429]
    assert refused, "400 requests from 32 threads never filled a queue of 2"
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "overloaded"
    metrics = env["client"].get("/metrics").text
    assert 'flame_predict_rejected_total{reason="overloaded",task="mortality"}' in metrics


@pytest.mark.parametrize("value", ["0.001", "1e-9"])
def test_an_expired_deadline_is_504_and_names_the_header(env, value) -> None:  # type: ignore[no-untyped-def]
    r = post(env, env["payloads"][0], **{"X-Flame-Deadline-Ms": value})
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert r.json()["error"]["field"] == "x-flame-deadline-ms"


@pytest.mark.parametrize("value", ["soon", "-5", "0", "nan", "inf"])
def test_a_malformed_deadline_is_422(env, value) -> None:  # type: ignore[no-untyped-def]
    r = post(env, env["payloads"][0], **{"X-Flame-Deadline-Ms": value})
    assert r.status_code == 422 and r.json()["error"]["field"] == "x-flame-deadline-ms", r.text


def test_a_generous_deadline_is_answered(env) -> None:  # type: ignore[no-untyped-def]
    assert post(env, env["payloads"][0], **{"X-Flame-Deadline-Ms": "60000"}).status_code == 200


def test_stat_priority_needs_the_stat_scope(env) -> None:  # type: ignore[no-untyped-def]
    denied = post(env, env["payloads"][0], **{"X-Flame-Priority": "stat"})
    assert denied.status_code == 403 and denied.json()["error"]["field"] == "x-flame-priority"
    assert post(env, env["payloads"][0], "stat", **{"X-Flame-Priority": "stat"}).status_code == 200
    assert post(env, env["payloads"][0], "admin", **{"X-Flame-Priority": "STAT"}).status_code == 200
    assert post(env, env["payloads"][0], **{"X-Flame-Priority": "routine"}).status_code == 200
    bad = post(env, env["payloads"][0], **{"X-Flame-Priority": "urgent"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "x-flame-priority"


def test_concurrent_predictions_during_swaps_match_their_version_alone(env) -> None:  # type: ignore[no-untyped-def]
    host, app = env["app"].state.host, env["app"]
    app.state.batcher.max_queue_depth = 10_000  # this test is about bits, not load shedding
    app.state.batcher.max_batch_size = 32
    try:
        reference = {}
        for version in ("v1", "v2"):
            with session_scope(env["factory"]) as s:
                move_alias_to(session=s, alias="active", version=version, moved_by="test")
            host.reload_if_changed()
            for i, p in enumerate(env["payloads"]):
                r = post(env, p)
                assert r.status_code == 200 and r.json()["model_version"] == version
                reference[(version, i)] = r.json()["predictions"][0]

        def flip(n: int) -> None:
            with session_scope(env["factory"]) as s:
                move_alias_to(session=s, alias="active", version=("v1", "v2")[n % 2], moved_by="test")
            host.reload_if_changed()

        def one(i: int):  # type: ignore[no-untyped-def]
            if i % 40 == 0:
                flip(i // 40)
            if i % 5 == 0:
                return i, post(env, {"instances": env["payloads"][:4]})
            return i, post(env, env["payloads"][i % 12])

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(320)))
        versions = set()
        for i, r in answers:
            assert r.status_code == 200, r.text
            body = r.json()
            versions.add(body["model_version"])
            indices = range(4) if i % 5 == 0 else [i % 12]
            for j, pred in zip(indices, body["predictions"], strict=True):
                assert pred == reference[(body["model_version"], j)]  # same bits, whatever the batch
        assert versions == {"v1", "v2"}
        assert app.state.batcher.batches < 320  # requests did share forward passes
    finally:
        app.state.batcher.max_queue_depth, app.state.batcher.max_batch_size = 2, 1
