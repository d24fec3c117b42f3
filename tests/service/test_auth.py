"""API keys: the token is shown once, only a hash is stored, scopes gate what a key may do."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select, text

from service.auth import service as auth
from service.auth.models import ApiKey
from service.registry.errors import ApiKeyNotFound, PermissionDenied


def test_token_is_returned_once_and_only_its_hash_is_stored(session_factory):
    with session_factory.begin() as s:
        key, token = auth.create_api_key(session=s, name="ward-7 EHR", scopes=["predict"])
    match = re.fullmatch(r"flm_([0-9a-f]{8})_([A-Za-z0-9_-]{43})", token)
    assert match is not None, token
    prefix, secret = match.groups()
    with session_factory() as s:
        row = s.scalars(select(ApiKey)).one()
        assert row.prefix == prefix and row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        stored = " ".join(str(v) for r in s.execute(text("SELECT * FROM api_keys")) for v in r)
        assert secret not in stored and token not in stored
        assert auth.authenticate(session=s, token=token).id == key.id
        assert auth.authenticate(session=s, token=f"  {token}\n").id == key.id


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: "flm_00000000_" + t.split("_", 2)[2],  # unknown prefix
        lambda t: t.replace("flm_", "xyz_", 1),  # wrong scheme
        lambda t: "flm_" + t.split("_")[1],  # no secret
        lambda t: "",
        lambda t: "Bearer " + t,  # the header value, not the token
    ],
)
def test_bad_tokens_authenticate_to_nobody(session, mangle):
    _, token = auth.create_api_key(session=session, name="k", scopes=["admin"])
    assert auth.authenticate(session=session, token=mangle(token)) is None


def test_revoked_keys_stop_working(session):
    key, token = auth.create_api_key(session=session, name="old", scopes=["train"])
    other, other_token = auth.create_api_key(session=session, name="new", scopes=["train"])
    revoked = auth.revoke_api_key(session=session, key_id=key.id)
    first_time = revoked.revoked_at
    assert auth.revoke_api_key(session=session, key_id=key.id).revoked_at == first_time
    assert auth.authenticate(session=session, token=token) is None
    assert auth.authenticate(session=session, token=other_token).id == other.id
    assert not auth.has_scope(revoked, "train")
    assert [k.name for k in auth.list_api_keys(session=session)] == ["new"]
    assert len(auth.list_api_keys(session=session, include_revoked=True)) == 2
    with pytest.raises(ApiKeyNotFound):
        auth.revoke_api_key(session=session, key_id="nope")


def test_scopes_and_admin_implies_all(session):
    predictor, _ = auth.create_api_key(session=session, name="p", scopes=["predict", "predict"])
    trainer, _ = auth.create_api_key(session=session, name="t", scopes=["train", "predict"])
    admin, _ = auth.create_api_key(session=session, name="a", scopes=["admin"])
    assert predictor.scopes == ["predict"] and trainer.scopes == ["predict", "train"]
    table = {k.name: [auth.has_scope(k, s) for s in auth.SCOPES] for k in (predictor, trainer, admin)}
    # SCOPES: predict, stat, train, admin
    assert table == {
        "p": [True, False, False, False],
        "t": [True, False, True, False],
        "a": [True, True, True, True],
    }
    auth.require_scope(admin, "train")
    with pytest.raises(PermissionDenied, match="lacks the 'train' scope"):
        auth.require_scope(predictor, "train")
    with pytest.raises(ValueError, match="scope must be one of"):
        auth.has_scope(admin, "delete")
    for bad in ([], ["root"], "admin"):
        with pytest.raises(ValueError, match="scopes"):
            auth.create_api_key(session=session, name="x", scopes=bad)
