"""Versions, lineage, aliases and crash safety of `register_version`, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from service.artifacts import sha256_bytes
from service.registry import service as registry
from service.registry import versions
from service.registry.errors import CapacityExceeded, Conflict, TaskNotFound, VersionNotFound
from service.registry.models import AliasHistory, Component, ModelVersion, Task
from service.registry.records import ComponentRecord, ModalityRecord, TaskRecord

BASE = b"base-weights"


def _task(name: str, modalities: list[str], cursor: int) -> TaskRecord:
    spec = {"name": name, "modalities": modalities, "head": {"type": "binary"}}
    return TaskRecord(name=name, spec=spec, cursor=cursor, metrics={"auroc": 0.8})


def _stage0(session, store, **kw):  # type: ignore[no-untyped-def]
    return registry.register_version(
        session=session,
        store=store,
        parent=None,
        files={"config": b'{"d": 8}', "weights": BASE},
        components=[ComponentRecord(stage=0, weight="fc1", n_params=64)],
        modalities=[ModalityRecord(name="vitals", kind="timeseries", spec={"dim": 3})],
        tasks=[_task("mortality", ["vitals"], 0)],
        moved_by="tester",
        reason="stage 0",
        **kw,
    )


def _stage(session, store, parent, stage, rank=4, task="los", **kw):  # type: ignore[no-untyped-def]
    return registry.register_version(
        session=session,
        store=store,
        parent=parent,
        files={"config": b'{"d": 8}', "weights": BASE, f"stage{stage}": f"delta-{stage}-{task}".encode()},
        components=[ComponentRecord(stage=stage, weight="fc1", n_params=rank * 16, rank=rank)],
        tasks=[_task(task, ["vitals"], stage)],
        moved_by="worker",
        reason=f"stage {stage}",
        **kw,
    )


def test_register_version_stores_files_and_moves_alias(session_factory, store):
    with session_factory.begin() as s:
        v1 = _stage0(s, store)
    assert v1.id == "v1"
    with session_factory() as s:
        active = registry.resolve_alias(session=s, alias="active")
        assert active.id == "v1" and active.parent_id is None and active.status == "ready"
        assert [f["role"] for f in active.manifest] == ["config", "weights"]
        weights = active.file("weights")
        assert weights["sha256"] == sha256_bytes(BASE) and weights["size"] == len(BASE)
        assert store.read_bytes(weights["sha256"]) == BASE
        assert active.digest == registry.manifest_digest(active.manifest)
        [move] = registry.alias_history(session=s, alias="active")
        assert (move.from_version, move.to_version, move.moved_by) == (None, "v1", "tester")
        assert move.reason == "stage 0"
        assert move.moved_at.tzinfo is not None


def test_child_version_sees_its_lineage_only(session_factory, store):
    with session_factory.begin() as s:
        _stage0(s, store)
        v2 = _stage(s, store, "v1", 1)
    with session_factory() as s:
        assert v2.id == "v2" and v2.parent_id == "v1"
        assert [v.id for v in registry.lineage(session=s, version="v2")] == ["v1", "v2"]
        assert [t.name for t in registry.list_tasks(session=s, version="v2")] == ["mortality", "los"]
        assert [t.name for t in registry.list_tasks(session=s, version="v1")] == ["mortality"]
        assert registry.get_task(session=s, name="los", version="v2").cursor == 1
        with pytest.raises(TaskNotFound, match="'los' is not served by model version 'v1'"):
            registry.get_task(session=s, name="los", version="v1")
        assert [m.name for m in registry.list_modalities(session=s, version="v2")] == ["vitals"]
        # The unchanged base weights are one shared blob.
        v1 = registry.get_version(session=s, version="v1")
        assert v2.file("weights")["sha256"] == v1.file("weights")["sha256"]
        assert registry.reserved_rank(session=s, version="v2") == {"fc1": 4}
        assert [c.stage for c in registry.list_components(session=s, version="v2")] == [0, 1]


def _db_state(session_factory):  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return (
            [v.id for v in registry.list_versions(session=s)],
            registry.list_aliases(session=s),
            s.query(AliasHistory).count(),
            sorted(t.name for t in s.query(Task)),
            s.query(Component).count(),
        )


def test_version_id_taken_inside_the_transaction_leaves_nothing(session_factory, store, monkeypatch):
    with session_factory.begin() as s:
        _stage0(s, store)
    before = _db_state(session_factory)
    # A concurrent registrar took the id between our id choice and our INSERT.
    monkeypatch.setattr(versions, "_next_version_id", lambda session: "v1")
    with session_factory() as s:
        with pytest.raises(Conflict, match="clashes with a concurrent registration"):
            _stage(s, store, "v1", 1, task="sepsis")
        s.commit()  # even a caller that commits after the error publishes nothing of the version
    assert _db_state(session_factory) == before == (["v1"], {"active": "v1"}, 1, ["mortality"], 1)
    assert store.exists(sha256_bytes(b"delta-1-sepsis"))  # blobs come first; unreferenced is fine


def test_crash_after_rows_are_flushed_rolls_back_version_and_alias(session_factory, store, monkeypatch):
    with session_factory.begin() as s:
        _stage0(s, store)
    real_move = versions.move_alias_to

    def crash(**kw):  # type: ignore[no-untyped-def]
        real_move(**kw)  # the alias row is updated and flushed ...
        raise RuntimeError("worker killed")  # ... then the process dies before commit

    monkeypatch.setattr(versions, "move_alias_to", crash)
    with session_factory() as s:
        with pytest.raises(RuntimeError, match="worker killed"):
            _stage(s, store, "v1", 1, task="sepsis")
        assert s.get(ModelVersion, "v2") is None  # gone even inside the same session
        s.commit()
    assert _db_state(session_factory) == (["v1"], {"active": "v1"}, 1, ["mortality"], 1)


def test_explicit_duplicate_id_is_refused_before_writing_blobs(session, store):
    _stage0(session, store, version_id="prod-1")
    with pytest.raises(Conflict, match="'prod-1' already exists"):
        _stage(session, store, "prod-1", 1, task="sepsis", version_id="prod-1")
    assert not store.exists(sha256_bytes(b"delta-1-sepsis"))


def test_alias_history_rollback_and_retire(session, store):
    _stage0(session, store)
    _stage(session, store, "v1", 1)
    registry.move_alias(session=session, alias="active", version="v1", moved_by="alice", reason="AUROC drop")
    registry.move_alias(session=session, alias="active", version="v1", moved_by="alice")  # no-op
    registry.move_alias(session=session, alias="canary", version="v2", moved_by="bob")
    history = registry.alias_history(session=session, alias="active")
    assert [(h.from_version, h.to_version, h.moved_by) for h in history] == [
        ("v2", "v1", "alice"),
        ("v1", "v2", "worker"),
        (None, "v1", "tester"),
    ]
    assert history[0].reason == "AUROC drop"
    assert registry.list_aliases(session=session) == {"active": "v1", "canary": "v2"}
    with pytest.raises(VersionNotFound):
        registry.move_alias(session=session, alias="active", version="v9", moved_by="alice")
    with pytest.raises(Conflict, match="still aliased as \\['canary'\\]"):
        registry.retire_version(session=session, version="v2")
    registry.move_alias(session=session, alias="canary", version="v1", moved_by="bob")
    assert registry.retire_version(session=session, version="v2").status == "retired"
    with pytest.raises(Conflict, match="is retired"):
        registry.move_alias(session=session, alias="active", version="v2", moved_by="alice")
    with pytest.raises(ValueError, match="alias"):
        registry.move_alias(session=session, alias="bad alias!", version="v1", moved_by="alice")


def test_capacity_budget_refuses_a_stage_before_anything_is_written(session, store):
    _stage0(session, store, rank_budget=8)
    _stage(session, store, "v1", 1, rank=4, rank_budget=8)
    with pytest.raises(CapacityExceeded) as info:
        _stage(session, store, "v2", 2, rank=5, task="sepsis", rank_budget=8)
    assert "fc1: 4 reserved + 5 requested = 9" in info.value.message
    assert "budget of 8" in info.value.message and info.value.over == {"fc1": (4, 5)}
    assert not store.exists(sha256_bytes(b"delta-2-sepsis"))
    assert [v.id for v in registry.list_versions(session=session)] == ["v1", "v2"]
    totals = registry.check_capacity(
        session=session,
        parent="v2",
        components=[ComponentRecord(stage=2, weight="fc1", n_params=1, rank=4)],
        budget=8,
    )
    assert totals == {"fc1": 8}


def test_stage_specs_clash_with_lineage(session, store):
    _stage0(session, store)
    with pytest.raises(Conflict, match="tasks \\['mortality'\\] already exist"):
        _stage(session, store, "v1", 1, task="mortality")
    same = ModalityRecord(name="vitals", kind="timeseries", spec={"dim": 3})
    other = ModalityRecord(name="vitals", kind="timeseries", spec={"dim": 4})
    kw = dict(session=session, store=store, parent="v1", files={"w": b"x"}, moved_by="w", move_alias=None)
    v2 = registry.register_version(modalities=[same], tasks=[_task("los", ["vitals"], 1)], **kw)
    assert len(registry.list_modalities(session=session, version=v2.id)) == 1  # reused, not re-added
    assert registry.resolve_alias(session=session).id == "v1"  # move_alias=None leaves it alone
    with pytest.raises(Conflict, match="cannot redeclare"):
        registry.register_version(modalities=[other], **kw)
    with pytest.raises(ValueError, match="undeclared modalities \\['notes'\\]"):
        registry.register_version(tasks=[_task("icd", ["notes"], 1)], **kw)
