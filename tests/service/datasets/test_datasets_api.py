"""POST /datasets: line-by-line validation (422 naming line and field), summary, storage by digest."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flame_core.benchmarks.synthetic_icu import generate
from service.datasets.router import router
from service.errors import install_error_handlers
from service.registry import service as registry
from service.registry.records import ModalityRecord, TaskRecord
from service.settings import Settings

LOS = {"name": "los", "modalities": ["vitals", "labs", "notes"], "head": {"type": "binary"}}


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    data = generate(seed=0, n=30).splits["train"]
    return [{**s, "labels": {"mortality": s["labels"]["mortality"], "los": s["labels"]["los"]}} for s in data]


@pytest.fixture
def client(session_factory, store, tmp_path):  # type: ignore[no-untyped-def]
    """The datasets router with a registered v1 serving `mortality` (rows only, no weights needed)."""
    specs = generate(seed=0, n=10).specs
    with session_factory.begin() as s:
        registry.register_version(
            session=s,
            store=store,
            parent=None,
            files={"weights": b"w"},
            moved_by="test",
            modalities=[ModalityRecord(n, m.kind, m.to_dict()) for n, m in specs.modalities.items()],
            tasks=[TaskRecord("mortality", specs.tasks["mortality"].to_dict(), 0)],
        )
    app = FastAPI()
    app.state.settings = Settings(database_url="sqlite://", artifact_root=tmp_path, auth_enabled=False)
    app.state.session_factory, app.state.store = session_factory, store
    app.include_router(router)
    install_error_handlers(app)  # the service's one handler, so statuses are the real ones

    with TestClient(app) as c:
        yield c


def _jsonl(rows: list) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def test_upload_raw_body_summarises_and_dedupes(client, samples, store):  # type: ignore[no-untyped-def]
    body = _jsonl(samples)
    r = client.post(
        "/datasets", content=body, params={"name": "los-train", "specs": json.dumps({"tasks": [LOS]})}
    )
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["name"] == "los-train" and out["n_samples"] == len(samples)
    summary = out["summary"]
    los_pos = sum(s["labels"]["los"] for s in samples)
    assert summary["tasks"]["los"] == {
        "labelled": len(samples),
        "balance": {"0": len(samples) - los_pos, "1": los_pos},
    }
    assert summary["tasks"]["mortality"]["labelled"] == len(samples)
    assert summary["modalities"]["vitals"] == sum("vitals" in s["modalities"] for s in samples)
    assert store.read_bytes(out["digest"]) == body.encode()
    again = client.post("/datasets", content=body, params={"specs": json.dumps({"tasks": [LOS]})})
    assert again.json()["dataset_id"] == out["dataset_id"]
    got = client.get(f"/datasets/{out['dataset_id']}").json()
    assert got["summary"] == summary and got["size"] == len(body.encode())
    assert client.get("/datasets/nope").status_code == 404


def test_multipart_upload_with_inline_regression_task(client, samples):  # type: ignore[no-untyped-def]
    specs = {"tasks": [{"name": "stay", "modalities": ["labs"], "head": {"type": "regression"}}]}
    rows = [
        {"modalities": {"labs": s["modalities"]["labs"]}, "labels": {"stay": float(i)}}
        for i, s in enumerate(samples)
        if "labs" in s["modalities"]
    ]
    files = {"file": ("stays.jsonl", _jsonl(rows), "application/x-ndjson")}
    r = client.post("/datasets", files=files, data={"specs": json.dumps(specs)})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["name"] == "stays.jsonl"
    assert out["summary"]["tasks"]["stay"]["balance"]["max"] == max(r["labels"]["stay"] for r in rows)
    assert out["summary"]["tasks"]["stay"]["labelled"] == len(rows)
    assert [t["name"] for t in out["summary"]["specs"]["tasks"]] == ["mortality", "stay"]


def test_bad_lines_answer_422_with_line_and_field(client, samples):  # type: ignore[no-untyped-def]
    bad = [samples[0], {**samples[1], "labels": {"mortality": 7}}]
    r = client.post("/datasets", content=_jsonl(bad), params={"specs": json.dumps({"tasks": [LOS]})})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["line"] == 2 and err["field"] == "labels.mortality" and "line 2" in err["message"]
    r = client.post("/datasets", content=_jsonl(samples[:2]))  # `los` is unknown without specs
    assert (
        r.status_code == 422 and r.json()["error"]["field"] == "labels.los" and r.json()["error"]["line"] == 1
    )
    r = client.post("/datasets", content=json.dumps(samples[0]) + "\n{not json\n")
    assert (
        r.status_code == 422
        and r.json()["error"]["line"] == 2
        and "invalid JSON" in r.json()["error"]["message"]
    )
    r = client.post("/datasets", content=_jsonl(samples[:1]), params={"specs": "[1]"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "specs"
    assert client.post("/datasets", content="").status_code == 422


@pytest.mark.parametrize("name", ["x" * 257, "train\x00set"])
def test_bad_name_is_422_naming_it_on_every_backend(client, samples, name):  # type: ignore[no-untyped-def]
    """A multipart name (or file name) the column cannot hold is the client's error, not a 500."""
    files = {"file": ("train.jsonl", _jsonl(samples[:2]).encode())}
    r = client.post("/datasets", files=files, data={"name": name})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "dataset_invalid" and r.json()["error"]["field"] == "name"
    if len(name) > 256:  # the file's name is the default name (a NUL in it never arrives)
        r = client.post("/datasets", files={"file": (name, _jsonl(samples[:2]).encode())})
        assert r.status_code == 422 and r.json()["error"]["field"] == "name", r.text


def test_malformed_dataset_id_is_422_unknown_is_404(client):  # type: ignore[no-untyped-def]
    assert client.get("/datasets/not%20an%20id").status_code == 422
    assert client.get("/datasets/0b9e8f1c-93a4-4e11-8d0e-5d7c2b4c3a02").status_code == 404


def test_malformed_multipart_is_422_naming_file(client):  # type: ignore[no-untyped-def]
    headers = {"content-type": "multipart/form-data"}  # no boundary, no parts
    for body in (b"", b"--x\r\nnot a part"):
        r = client.post("/datasets", content=body, headers=headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "dataset_invalid" and r.json()["error"]["field"] == "file"
