"""Engine and session plumbing: units of work, SQLite pragmas, timezone-aware timestamps."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from service.db import make_engine, make_session_factory, session_scope
from service.registry.models import AliasHistory, ModelVersion


def _version(vid: str, parent: str | None = None) -> ModelVersion:
    return ModelVersion(id=vid, parent_id=parent, digest="0" * 64, manifest=[], created_by="t")


def test_session_scope_commits_or_rolls_back_as_a_whole(session_factory):
    with session_scope(session_factory) as s:
        s.add(_version("a"))
    with pytest.raises(RuntimeError), session_scope(session_factory) as s:
        s.add(_version("b"))
        s.flush()
        raise RuntimeError("boom")
    with session_scope(session_factory) as s:
        assert [v.id for v in s.query(ModelVersion)] == ["a"]
        assert s.get(ModelVersion, "a").created_at.tzinfo is not None


def test_foreign_keys_are_enforced(session_factory):
    with pytest.raises(IntegrityError), session_scope(session_factory) as s:
        s.add(_version("child", parent="no-such-parent"))


def test_naive_datetimes_are_refused(session_factory):
    with pytest.raises(Exception, match="naive datetime"), session_scope(session_factory) as s:
        s.add(AliasHistory(alias="active", to_version=None, moved_by="t", moved_at=datetime(2024, 1, 1)))


def test_sqlite_file_gets_its_directory_wal_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'dir' / 'r.db'}")
    with make_session_factory(engine)() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
    assert (tmp_path / "new" / "dir" / "r.db").exists()
