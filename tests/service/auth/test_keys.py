"""Keys in production, on SQLite and PostgreSQL: admins list, mint and revoke keys over HTTP; a revoked
key gets 401 at once on the replica that revoked it and within the cache TTL on the others; an
expired key gets 401 even from the cache."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from flame_core.config import FlameConfig
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.registry import run_migrations
from service.cli.serve import build_demo_model, register_model
from service.db import make_engine, make_session_factory, session_scope
from service.orm import utcnow
from service.settings import Settings

TINY = FlameConfig(
    d_model=8, n_experts=2, top_k=1, expert_hidden=8, ts_ref_points=4, n_heads=2, text_buckets=64
)
SAMPLE = {
    "modalities": {"labs": {"values": [0.4, -1.2, None, 0.8, 0.0, 1.5, -0.3, None, 0.9, 0.1, -0.7, 0.2]}}
}


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return build_demo_model(n=200, epochs=0, config=TINY)[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path, tiny):  # type: ignore[no-untyped-def]
    """A migrated registry serving a tiny model, with an admin and a predict key."""
    url = (
        f"sqlite:///{tmp_path / 'registry.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_database")
    )
    run_migrations(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    register_model(session_factory=factory, store=LocalArtifactStore(tmp_path / "blobs"), cl=tiny)
    with session_scope(factory) as s:
        tokens = {
            scope: create_api_key(session=s, name=scope, scopes=[scope])[1] for scope in ("admin", "predict")
        }
    yield {"url": url, "root": tmp_path / "blobs", "factory": factory, "tokens": tokens}
    engine.dispose()


def replica(registry, ttl: float):  # type: ignore[no-untyped-def]
    settings = Settings(
        _env_file=None,
        database_url=registry["url"],
        artifact_root=registry["root"],
        device="cpu",
        auth_cache_ttl_s=ttl,
    )
    return TestClient(create_app(settings, reload_interval_s=3600))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def predict(client, token: str) -> int:  # type: ignore[no-untyped-def]
    return client.post("/predict/mortality", json=SAMPLE, headers=auth(token)).status_code


def test_a_revoked_key_is_refused_at_once_here_and_within_the_ttl_elsewhere(registry):
    admin, token = registry["tokens"]["admin"], registry["tokens"]["predict"]
    with replica(registry, ttl=60) as here, replica(registry, ttl=0.5) as there:
        assert predict(here, token) == 200 and predict(there, token) == 200  # both have cached the key
        (key,) = [k for k in here.get("/keys", headers=auth(admin)).json() if k["name"] == "predict"]
        r = here.delete(f"/keys/{key['id']}", headers=auth(admin))
        assert r.status_code == 200 and r.json()["state"] == "revoked" and r.json()["revoked_at"]
        assert predict(here, token) == 401  # at once, though its cache TTL is a minute
        time.sleep(0.6)
        assert predict(there, token) == 401  # the other replica within its TTL
        assert (
            here.delete(f"/keys/{key['prefix']}", headers=auth(admin)).json()["revoked_at"]
            == r.json()["revoked_at"]
        )
        assert here.delete("/keys/nope", headers=auth(admin)).json()["error"]["code"] == "api_key_not_found"
        listed = here.get("/keys", params={"include_revoked": "true"}, headers=auth(admin)).json()
        assert {k["name"]: k["state"] for k in listed} == {"admin": "active", "predict": "revoked"}


def test_an_expired_key_is_refused_even_from_the_cache(registry):
    with session_scope(registry["factory"]) as s:
        _, soon = create_api_key(
            session=s, name="soon", scopes=["predict"], expires_at=utcnow() + timedelta(seconds=1)
        )
    with replica(registry, ttl=60) as client:
        assert predict(client, soon) == 200  # and now cached for a minute
        time.sleep(1.1)
        r = client.post("/predict/mortality", json=SAMPLE, headers=auth(soon))
        assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
        admin = auth(registry["tokens"]["admin"])
        assert {k["name"]: k["state"] for k in client.get("/keys", headers=admin).json()}["soon"] == "expired"
    with registry["factory"]() as s:  # the database agrees
        assert (
            s.execute(
                text("SELECT count(*) FROM api_keys WHERE expires_at < :now"), {"now": utcnow()}
            ).scalar()
            == 1
        )


def test_admins_mint_keys_whose_token_is_shown_once(registry):
    admin = auth(registry["tokens"]["admin"])
    with replica(registry, ttl=5) as client:
        r = client.post(
            "/keys", json={"name": "ward 7", "scopes": ["predict"], "expires_in": "30d"}, headers=admin
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["state"] == "active" and body["token"].startswith(f"flm_{body['prefix']}_")
        lifetime = (
            client.get("/keys", headers=admin).json()[-1]["expires_at"],
            (utcnow() + timedelta(days=30)).isoformat()[:13],
        )
        assert lifetime[0][:13] == lifetime[1]  # 30 days from now, to the hour
        assert predict(client, body["token"]) == 200
        listed = client.get("/keys", headers=admin).text
        assert body["token"] not in listed and "secret" not in listed and "token" not in listed
        for bad, field in [
            ({"name": "x", "scopes": ["predict"], "expires_in": "soon"}, "expires_in"),
            ({"name": "x", "scopes": ["root"]}, "scopes.0"),
            ({"name": "x", "scopes": ["predict"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
            ({"name": "", "scopes": ["predict"]}, "name"),
        ]:
            r = client.post("/keys", json=bad, headers=admin)
            assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
        assert (
            client.post(
                "/keys", json={"name": "x", "scopes": ["admin"]}, headers=auth(body["token"])
            ).status_code
            == 403
        )
        assert client.get("/keys").status_code == 401
