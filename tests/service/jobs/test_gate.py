"""The promotion gate on the in-process queue (SQLite and PostgreSQL): canaries are stored with
every new task, replayed for every earlier task before `active` moves; a version whose earlier-task
outputs changed, or whose new task misses `min_metric`, stays `candidate` and is counted."""

from __future__ import annotations

import hashlib
import json

import torch
from prometheus_client import CollectorRegistry

from service.artifacts import LocalArtifactStore
from service.registry import service as registry
from service.registry_metrics import RegistryCollector
from service.versioning import load_version, version_files

from .conftest import LOS, drain, host_outputs, register_pretrained, stage_request


def _rejected(session_factory) -> float:  # type: ignore[no-untyped-def]
    """What /metrics says, read from the registry as every scrape target reads it."""
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(RegistryCollector(session_factory))
    value = metrics.get_sample_value("flame_model_promotions_total", {"outcome": "rejected"})
    assert value is not None  # the series exists from the start, at 0
    return value


def _run(client, body) -> dict:  # type: ignore[no-untyped-def]
    r = client.post("/tasks", json=body)
    assert r.status_code == 202, r.text
    drain(client)
    return client.get(f"/jobs/{r.json()['job_id']}").json()


def test_root_canaries_are_the_hosts_output_bytes(session_factory, store, v1_gated, icu):  # type: ignore[no-untyped-def]
    with session_factory() as s:
        canary = registry.get_task(session=s, name="mortality", version=v1_gated).canary
    assert canary["n"] == 8 and canary["dtype"] == "float32"
    stored = json.loads(store.read_bytes(canary["samples_sha256"]))
    assert stored["task"] == "mortality" and len(stored["samples"]) == 8
    assert all(set(s) == {"modalities"} for s in stored["samples"])  # no labels, no ids
    outputs = host_outputs(store, session_factory, v1_gated, "mortality", stored["samples"])
    data = outputs.to(torch.float32).contiguous().numpy().tobytes()
    assert hashlib.sha256(data).hexdigest() == canary["outputs_sha256"]


def test_stage_passes_the_gate_and_records_its_own_canaries(client, session_factory, store, v1_gated, icu):  # type: ignore[no-untyped-def]
    job = _run(client, stage_request(client, icu, LOS))
    assert job["state"] == "succeeded" and job["result_version"] == "v2", job
    assert job["promotion"]["promoted"] is True and job["promotion"]["status"] == "ready"
    assert job["promotion"]["checked"] == {"mortality": "identical"} and job["promotion"]["unchecked"] == []
    with session_factory() as s:
        assert registry.resolve_alias(session=s).id == "v2"
        los = registry.get_task(session=s, name="los", version="v2").canary
    samples = json.loads(store.read_bytes(los["samples_sha256"]))["samples"]
    data = host_outputs(store, session_factory, "v2", "los", samples).to(torch.float32).numpy().tobytes()
    assert hashlib.sha256(data).hexdigest() == los["outputs_sha256"]


def test_changed_earlier_outputs_keep_the_version_candidate(client, session_factory, store, v1_gated, icu):  # type: ignore[no-untyped-def]
    """v1's weights artifact is swapped for a perturbed one after its canaries were recorded: the
    child trained on it answers mortality differently, so the gate refuses it."""
    with session_factory.begin() as s:
        row = registry.get_version(session=s, version=v1_gated)
        cl = load_version(store, row)
        with torch.no_grad():
            next(p for p in cl.model.parameters() if p.dim() == 2).add_(0.05)
        weights = version_files(cl)["weights"]
        row.manifest = [
            {**e, "sha256": store.put_bytes(weights), "size": len(weights)} if e["role"] == "weights" else e
            for e in row.manifest
        ]
    before = _rejected(session_factory)
    job = _run(client, stage_request(client, icu, LOS))
    assert job["state"] == "succeeded" and job["result_version"] == "v2", job
    promotion = job["promotion"]
    assert promotion["promoted"] is False and promotion["status"] == "candidate"
    assert promotion["checked"] == {"mortality": "changed"} and "'mortality'" in promotion["reason"]
    assert _rejected(session_factory) == before + 1
    with session_factory() as s:
        assert registry.get_version(session=s, version="v2").status == "candidate"
        assert registry.list_aliases(session=s) == {"active": v1_gated}
    r = client.post("/models/v2/activate", json={"reason": "force"})
    assert r.status_code == 409 and "candidate" in r.json()["error"]["message"]
    assert client.get("/models/v2").json()["status"] == "candidate"


def test_min_metric_above_what_the_stage_reaches_keeps_it_candidate(client, session_factory, v1_gated, icu):  # type: ignore[no-untyped-def]
    before = _rejected(session_factory)
    job = _run(client, stage_request(client, icu, LOS, min_metric={"auroc": 1.0}))
    assert job["state"] == "succeeded" and job["metrics"]["tasks"]["los"]["auroc"] < 1.0, job
    promotion = job["promotion"]
    assert promotion["promoted"] is False and promotion["checked"] == {"mortality": "identical"}
    assert "'los': auroc" in promotion["reason"] and "below min_metric 1.0" in promotion["reason"]
    assert _rejected(session_factory) == before + 1
    with session_factory() as s:
        assert registry.get_version(session=s, version=job["result_version"]).status == "candidate"
        assert registry.resolve_alias(session=s).id == v1_gated


def test_versions_without_canaries_are_gated_on_what_they_have(client, session_factory, v1, icu):  # type: ignore[no-untyped-def]
    job = _run(client, stage_request(client, icu, LOS))
    assert job["promotion"]["promoted"] is True and job["promotion"]["checked"] == {}
    assert job["promotion"]["unchecked"] == ["mortality"] and "not replayed" in job["promotion"]["note"]


def test_the_stage_resolves_its_parent_when_it_starts(client, session_factory, store, v1, icu, pretrained):  # type: ignore[no-untyped-def]
    """A job submitted while v1 was active runs on whatever is active when it starts (v1b here)."""
    from service.jobs.stage import run_stage

    body = stage_request(client, icu, LOS)
    with session_factory.begin() as s:
        job_id = registry.create_job(session=s, kind="stage", request=body).id  # queued, not enqueued
        # an operator activates another root before the job starts
        register_pretrained(s, store, pretrained, version_id="v1b")
        assert registry.get_job(session=s, job_id=job_id).parent_version is None
    settings = client.app.state.settings
    version = run_stage(job_id, session_factory=session_factory, store=store, settings=settings)
    with session_factory() as s:
        job = registry.get_job(session=s, job_id=job_id)
        assert job.state == "succeeded" and job.parent_version == "v1b", job.error
        assert registry.get_version(session=s, version=version).parent_id == "v1b"
        assert registry.resolve_alias(session=s).id == version


def test_demo_bootstrap_stores_canaries_for_every_task(tmp_path):  # type: ignore[no-untyped-def]
    """`flame serve`'s bootstrap (migrations, demo model, root version) gives each task its canaries."""
    from service.cli.bootstrap import bootstrap
    from service.db import make_engine, make_session_factory
    from service.jobs.canaries import load_as_host, replay
    from service.settings import Settings

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}", artifact_root=tmp_path / "a", auth_enabled=False
    )
    version, _ = bootstrap(settings, n=200, epochs=0)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as s:
            row = registry.get_version(session=s, version=version)
            tasks = registry.list_tasks(session=s, version=version)
    finally:
        engine.dispose()
    assert [t.name for t in tasks] == ["mortality", "los", "phenotype", "acuity"]
    assert all(t.canary is not None and t.canary["n"] == 8 for t in tasks)
    store = LocalArtifactStore(settings.artifact_root)
    files = {e["role"]: store.read_bytes(e["sha256"]) for e in row.manifest}
    loaded = load_as_host(store, files)
    assert {t.name: replay(loaded, store, t.name, t.canary) for t in tasks} == {
        t.name: t.canary["outputs_sha256"] for t in tasks
    }
