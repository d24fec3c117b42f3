"""Compare-and-swap alias moves and candidate versions, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from service.registry import service as registry
from service.registry.errors import AliasMoved, Conflict


def _version(session, store, parent, tag, status="ready"):  # type: ignore[no-untyped-def]
    return registry.register_version(
        session=session,
        store=store,
        parent=parent,
        files={"weights": tag.encode()},
        moved_by="test",
        move_alias="active" if parent is None else None,
        status=status,
    ).id


def test_swap_moves_only_from_the_expected_version(session, store):  # type: ignore[no-untyped-def]
    v1 = _version(session, store, None, "a")
    v2 = _version(session, store, v1, "b")
    v3 = _version(session, store, v1, "c")
    registry.swap_alias(
        session=session, alias="active", expected=v1, version=v2, moved_by="job:1", reason="s1"
    )
    assert registry.list_aliases(session=session) == {"active": v2}
    with pytest.raises(AliasMoved, match=f"points at '{v2}', no longer at '{v1}'"):
        registry.swap_alias(session=session, alias="active", expected=v1, version=v3, moved_by="job:2")
    session.commit()
    assert registry.list_aliases(session=session) == {"active": v2}
    moves = [
        (h.from_version, h.to_version, h.moved_by)
        for h in registry.alias_history(session=session, alias="active")
    ]
    assert moves == [(v1, v2, "job:1"), (None, v1, "test")]


def test_candidate_is_stored_but_never_aliased(session, store):  # type: ignore[no-untyped-def]
    v1 = _version(session, store, None, "a")
    cand = _version(session, store, v1, "b", status="candidate")
    assert registry.get_version(session=session, version=cand).status == "candidate"
    with pytest.raises(Conflict, match="is candidate"):
        registry.swap_alias(session=session, alias="active", expected=v1, version=cand, moved_by="job:1")
    with pytest.raises(Conflict, match="is candidate"):
        registry.move_alias(session=session, alias="active", version=cand, moved_by="admin")
    assert registry.list_aliases(session=session) == {"active": v1}
    with pytest.raises(ValueError, match="status must be one of"):
        _version(session, store, v1, "c", status="promoted")
