"""/metrics after traffic: the names the Grafana dashboard queries all exist, with bounded labels."""

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.cli.serve import build_demo_model, register_model
from service.db import load_models, make_engine, make_session_factory
from service.settings import Settings

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "dashboards" / "flame.json"
TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def dashboard_metric_names() -> set[str]:
    doc = json.loads(DASHBOARD.read_text())
    assert len(doc["panels"]) >= 10 and all(p.get("targets") for p in doc["panels"])
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    return {name for e in exprs for name in re.findall(r"\bflame_[a-z0-9_]+", e)}


def families(text: str) -> set[str]:
    """Metric family names from the exposition's TYPE lines, plus their sample names."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}.get(kind, ())
            base = name.removesuffix("_total")
            names.update(base + s for s in suffixes)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def scrape(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_root=root / "a",
        device="cpu",
        auth_enabled=False,
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    cl, _ = build_demo_model(n=200, epochs=0, config=TINY)
    register_model(session_factory=make_session_factory(engine), store=LocalArtifactStore(root / "a"), cl=cl)
    mods = load_benchmark("synthetic-icu", n=200).splits["test"][0]["modalities"]
    mods = {k: v for k, v in mods.items() if k != "cxr"}
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        for task in ("mortality", "acuity"):
            r = client.post(
                f"/predict/{task}",
                json={"instances": [{"modalities": mods}] * 2},
                headers={"X-Request-ID": "secret-request-id"},
            )
            assert r.status_code == 200
        assert client.post("/predict/mortality", json={"modalities": {}}).status_code == 422
        client.app.state.audit_writer.flush()  # type: ignore[attr-defined]
        r = client.get("/metrics")
    engine.dispose()
    assert r.status_code == 200
    return r.text


def test_every_dashboard_metric_is_exposed(scrape):
    wanted = dashboard_metric_names()
    assert {
        "flame_http_requests_total",
        "flame_predict_duration_seconds_bucket",
        "flame_jobs_finished_total",
        "flame_job_duration_seconds_bucket",
        "flame_predict_queue_depth_bucket",
        "flame_registry_active_info",
        "flame_audit_rows_total",
    } <= wanted
    missing = sorted(wanted - families(scrape))
    assert not missing, f"dashboard queries metrics /metrics does not expose: {missing}"


def test_traffic_is_counted_with_bounded_labels(scrape):
    assert 'flame_http_requests_total{method="POST",route="/predict/{task}",status="422"}' in scrape
    assert re.search(
        r'flame_predict_duration_seconds_count\{stage="forward",task="mortality"\} [1-9]', scrape
    )
    assert re.search(
        r'flame_modality_presence_total\{modality="cxr",state="missing",task="mortality"\} [1-9]', scrape
    )
    assert re.search(r'flame_expert_selections_total\{expert="[0-3]",modality="vitals"\} [1-9]', scrape)
    assert re.search(r'flame_predict_batch_size_bucket\{le="2.0"\} [1-9]', scrape)
    assert re.search(r'flame_model_info\{version="v\d+"\} 1.0', scrape)
    assert re.search(r'flame_registry_active_info\{version="v1"\} 1.0', scrape)  # read from the registry
    assert 'flame_jobs_finished_total{kind="stage",state="failed"} 0.0' in scrape  # exists before any job
    assert re.search(r"flame_predict_queue_depth_count [1-9]", scrape)  # every request's depth is seen
    assert re.search(r'flame_audit_rows_total\{outcome="written"\} [1-9]', scrape)
    assert 'flame_predict_rejected_total{reason="deadline",task="acuity"} 0.0' in scrape  # at 0 from the load
    assert "secret-request-id" not in scrape  # ids never become labels
