"""The app's plumbing: health and readiness, API-key auth on /predict, request ids, error shape."""

import pytest
from fastapi.testclient import TestClient

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from service.app import ROUTERS, create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import build_demo_model, register_model
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.settings import Settings

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)


def _settings(root, **kw):
    return Settings(
        database_url=f"sqlite:///{root / 'registry.db'}", artifact_root=root / "artifacts", device="cpu", **kw
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    settings = _settings(root, auth_enabled=True)
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    cl, _ = build_demo_model(n=200, epochs=0, config=TINY)
    register_model(session_factory=factory, store=LocalArtifactStore(settings.artifact_root), cl=cl)
    tokens = {}
    with session_scope(factory) as session:
        for scope in ("predict", "train", "admin"):
            tokens[scope] = create_api_key(session=session, name=scope, scopes=[scope])[1]
    sample = {"modalities": load_benchmark("synthetic-icu", n=200).splits["test"][0]["modalities"]}
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        yield client, tokens, sample
    engine.dispose()


def test_health_and_readiness(env):
    client, _, _ = env
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "model": "ok (v1)"}


def test_readyz_is_503_without_an_active_version(tmp_path):
    settings = _settings(tmp_path, auth_enabled=False)
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["database"] == "ok"
        assert "active" in r.json()["checks"]["model"]
        r = client.post("/predict/mortality", json={"modalities": {}})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
    engine.dispose()


def test_auth_401_403_and_scopes(env):
    client, tokens, sample = env
    r = client.post("/predict/mortality", json=sample)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == {
        "code": "unauthorized",
        "message": "missing API key: send 'Authorization: Bearer <token>'",
        "field": "authorization",
    }
    bad = tokens["predict"][:-4] + "xxxx"
    assert (
        client.post("/predict/mortality", json=sample, headers={"Authorization": f"Bearer {bad}"}).status_code
        == 401
    )
    r = client.post("/predict/mortality", json=sample, headers={"Authorization": f"Bearer {tokens['train']}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    for scope in ("predict", "admin"):
        r = client.post(
            "/predict/mortality", json=sample, headers={"Authorization": f"Bearer {tokens[scope]}"}
        )
        assert r.status_code == 200 and r.json()["model_version"] == "v1"


def test_request_id_and_error_shape(env):
    client, _, _ = env
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32
    r = client.get("/nowhere")
    assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message", "field"}


def test_routers_list_is_extensible():
    paths = {route.path for router in ROUTERS for route in router.routes}
    assert {"/healthz", "/readyz", "/metrics", "/predict/{task}"} <= paths
