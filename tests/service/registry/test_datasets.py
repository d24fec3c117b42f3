"""Datasets are content-addressed (one row per digest); the prediction audit holds no payloads."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from service.artifacts import sha256_bytes
from service.datasets.models import Dataset
from service.inference.models import PredictionAudit
from service.registry import datasets
from service.registry import service as registry
from service.registry.errors import DatasetNotFound

JSONL = b'{"modalities": {"labs": {"values": [1, 2]}}, "label": 1}\n'


def test_same_content_is_one_dataset(session_factory, store, tmp_path):
    with session_factory.begin() as s:
        first = registry.create_dataset(
            session=s, store=store, name="icu-train", content=JSONL, n_samples=1, summary={"labels": {"1": 1}}
        )
    path = tmp_path / "copy.jsonl"
    path.write_bytes(JSONL)
    with session_factory.begin() as s:
        again = registry.create_dataset(session=s, store=store, name="renamed", content=path, n_samples=1)
        assert again.id == first.id and again.name == "icu-train"
    with session_factory() as s:
        got = registry.get_dataset(session=s, dataset_id=first.id)
        assert got.digest == got.artifact_sha256 == sha256_bytes(JSONL) and got.size == len(JSONL)
        assert store.read_bytes(got.artifact_sha256) == JSONL
        assert got.summary == {"labels": {"1": 1}}
        assert s.query(Dataset).count() == 1
        with pytest.raises(DatasetNotFound):
            registry.get_dataset(session=s, dataset_id="missing")


def test_digest_is_unique_in_the_database(session, store):
    registry.create_dataset(session=session, store=store, name="a", content=JSONL, n_samples=1)
    session.add(
        Dataset(
            id="dup",
            digest=sha256_bytes(JSONL),
            name="b",
            n_samples=1,
            summary={},
            artifact_sha256=sha256_bytes(JSONL),
            size=1,
        )
    )
    with pytest.raises(IntegrityError):
        session.flush()


def test_concurrent_upload_of_the_same_content_returns_the_winner(session, store, monkeypatch):
    winner = registry.create_dataset(session=session, store=store, name="a", content=JSONL, n_samples=1)
    real, calls = datasets.find_dataset, []

    def blind_first(**kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        return None if len(calls) == 1 else real(**kw)

    monkeypatch.setattr(datasets, "find_dataset", blind_first)
    assert (
        registry.create_dataset(session=session, store=store, name="b", content=JSONL, n_samples=1).id
        == winner.id
    )
    assert len(calls) == 2 and session.query(Dataset).count() == 1


def test_prediction_audit_records_metadata_only(session):
    row = registry.record_prediction(
        session=session,
        request_id="req-1",
        task="mortality",
        version="v3",
        modalities_present=["vitals", "labs"],
        latency_ms=12.5,
        status_code=200,
        caller_key_id="key-1",
    )
    registry.record_prediction(
        session=session,
        request_id="req-2",
        task="los",
        version="v3",
        modalities_present=[],
        latency_ms=3,
        status_code=422,
    )
    assert row.modalities_present == ["labs", "vitals"] and row.created_at.tzinfo is not None
    assert [r.request_id for r in registry.list_predictions(session=session, task="mortality")] == ["req-1"]
    assert len(registry.list_predictions(session=session)) == 2
    columns = {c.key for c in inspect(PredictionAudit).columns}
    assert columns == {
        "id",
        "request_id",
        "task",
        "version",
        "modalities_present",
        "latency_ms",
        "status_code",
        "caller_key_id",
        "created_at",
    }
    with pytest.raises(ValueError, match="latency_ms"):
        registry.record_prediction(
            session=session,
            request_id="r",
            task="t",
            version="v",
            modalities_present=[],
            latency_ms=-1,
            status_code=200,
        )
