"""POST /models/{version}/activate: a bad alias is a 422 naming it, an unknown one a 404 that creates
nothing; only `active` or an existing alias moves (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from service.registry import service as registry
from service.registry.models import Alias


def _aliases(session_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return registry.list_aliases(session=s)


@pytest.mark.parametrize("alias", ["", " ", "bad alias", "a/b", "x" * 65, "-lead", "v1\x00"])
def test_malformed_alias_is_422_naming_alias(client, v1, alias, session_factory):  # type: ignore[no-untyped-def]
    r = client.post(f"/models/{v1}/activate", json={"alias": alias})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "request_invalid" and r.json()["error"]["field"] == "alias"
    assert _aliases(session_factory) == {"active": v1}


def test_unknown_alias_is_404_and_creates_nothing(client, v1, session_factory):  # type: ignore[no-untyped-def]
    r = client.post(f"/models/{v1}/activate", json={"alias": "canary", "reason": "try"})
    assert r.status_code == 404, r.text
    assert r.json()["error"] == {
        "code": "alias_not_found",
        "message": "alias 'canary' does not exist, so it cannot be moved",
        "field": "alias",
    }
    assert _aliases(session_factory) == {"active": v1}


def test_existing_alias_moves_and_active_may_be_created(client, v1, session_factory):  # type: ignore[no-untyped-def]
    with session_factory.begin() as s:
        registry.move_alias(session=s, alias="canary", version=v1, moved_by="test")
        s.execute(delete(Alias).where(Alias.name == "active"))
    r = client.post(f"/models/{v1}/activate", json={"alias": "canary", "reason": "again"})
    assert r.status_code == 200 and r.json()["alias"] == "canary" and r.json()["previous"] == v1
    r = client.post(f"/models/{v1}/activate")
    assert r.status_code == 200 and r.json()["alias"] == "active" and r.json()["previous"] is None
    assert _aliases(session_factory) == {"active": v1, "canary": v1}


def test_reason_with_nul_is_422_not_a_database_error(client, v1):  # type: ignore[no-untyped-def]
    r = client.post(f"/models/{v1}/activate", json={"reason": "roll\x00back"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "reason", r.text


def test_malformed_version_is_422_unknown_is_404(client, v1):  # type: ignore[no-untyped-def]
    assert client.post("/models/v%201/activate").status_code == 422
    r = client.post("/models/v99/activate")
    assert r.status_code == 404 and r.json()["error"]["code"] == "version_not_found"
