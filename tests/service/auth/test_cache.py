"""The API-key cache: a revoked key is refused once the TTL passes, a recently verified key rides out a
database that cannot be opened (within the grace), and nothing it cannot verify is let in."""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from service.app import create_app
from service.auth.cache import KeyCache
from service.auth.service import create_api_key, revoke_api_key
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.settings import Settings


@pytest.fixture
def db(tmp_path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    good = make_engine(url)
    load_models().create_all(good)
    bad = create_engine("sqlite:////proc/flame-no-such-dir/registry.db")
    yield {"url": url, "good": good, "bad": bad, "factory": make_session_factory(good)}
    good.dispose()
    bad.dispose()


def new_key(factory, scopes=("predict",)):  # type: ignore[no-untyped-def]
    with session_scope(factory) as s:
        key, token = create_api_key(session=s, name="clinic", scopes=list(scopes))
    return key.id, token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_revocation_reaches_the_cache_after_the_ttl(db):  # type: ignore[no-untyped-def]
    clock = Clock()
    cache = KeyCache(ttl_s=10, outage_grace_s=100, clock=clock)
    key_id, token = new_key(db["factory"])
    assert cache.authenticate(session_factory=db["factory"], token=token).id == key_id
    digest = hashlib.sha256(token.encode()).hexdigest()
    stored = repr(cache.__dict__)  # keyed by the token's hash; the plaintext is nowhere
    assert digest in stored and token not in stored and token.split("_", 2)[2] not in stored
    with session_scope(db["factory"]) as s:
        revoke_api_key(session=s, key_id=key_id)
    clock.now += 9
    assert cache.authenticate(session_factory=db["factory"], token=token).id == key_id  # cached
    clock.now += 2
    assert cache.authenticate(session_factory=db["factory"], token=token) is None
    clock.now += 1
    assert cache.authenticate(session_factory=db["factory"], token=token) is None  # not re-cached
    assert digest not in repr(cache.__dict__)  # revoked: gone from the cache


def test_outage_grace_for_verified_keys_only(db):  # type: ignore[no-untyped-def]
    clock = Clock()
    cache = KeyCache(ttl_s=10, outage_grace_s=100, clock=clock)
    factory = db["factory"]
    key_id, token = new_key(factory)
    _, never_seen = new_key(factory)
    assert cache.authenticate(session_factory=factory, token=token).id == key_id
    factory.configure(bind=db["bad"])
    clock.now += 50  # stale: re-checked, the database cannot be opened, within the grace
    assert cache.authenticate(session_factory=factory, token=token).id == key_id
    with pytest.raises(OperationalError):
        cache.authenticate(session_factory=factory, token=never_seen)
    assert cache.authenticate(session_factory=factory, token="not-a-token") is None  # no DB needed
    clock.now += 51  # past the grace: it cannot be verified any more
    with pytest.raises(OperationalError):
        cache.authenticate(session_factory=factory, token=token)
    factory.configure(bind=db["good"])
    assert cache.authenticate(session_factory=factory, token=token).id == key_id


def test_revoked_key_gets_401_once_the_ttl_passes(db, tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=db["url"], artifact_root=tmp_path / "artifacts", device="cpu", auth_cache_ttl_s=0.3
    )
    key_id, token = new_key(db["factory"], scopes=["train"])
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        assert client.get("/models", headers=headers).status_code == 200
        with session_scope(db["factory"]) as s:
            revoke_api_key(session=s, key_id=key_id)
        time.sleep(0.4)
        r = client.get("/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
