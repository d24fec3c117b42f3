"""The dashboard and the alerts against a REAL Prometheus (Debian's `prometheus` package, installed by
`make install-system`): it scrapes a real API process (`flame serve`) and a real Celery worker's
metrics port, on the real PostgreSQL and Redis, while prediction traffic flows and one stage job
succeeds and one fails; then EVERY expression of docker/grafana/dashboards/flame.json is evaluated
through Prometheus' HTTP API and must return data, the job panels counting both jobs. The alert rules
are loaded by that Prometheus (their `promtool` checks: test_prometheus_rules.py).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.artifacts import LocalArtifactStore
from service.db import make_session_factory
from service.jobs.queue import enqueue
from service.registry import service as registry
from service.settings import Settings

from .conftest import start_celery_worker
from .jobs.conftest import LOS, icu, only_labels, pretrained, register_pretrained  # noqa: F401 - fixtures
from .test_prometheus_rules import tool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "flame.json"
PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
REDIS_URL = os.environ.get("FLAME_TEST_PROMETHEUS_REDIS_URL", "redis://127.0.0.1:6379/10")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, procs: dict[str, subprocess.Popen] | None = None) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        for name, proc in (procs or {}).items():
            assert proc.poll() is None, f"{name} exited early with {proc.returncode}"
        try:
            value = predicate()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.25)


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p["targets"]]


def stop(proc: subprocess.Popen, log: Path) -> str:
    """Terminate `proc`; the end of its log (a file: a pipe nobody reads would block it once full)."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def datasets(session, store, icu_data) -> dict[str, str]:  # type: ignore[no-untyped-def]
    ids = {}
    for split in ("train", "val"):
        samples = only_labels(icu_data.splits[split], ["los"])
        data = "\n".join(json.dumps(x) for x in samples).encode()
        ids[split] = registry.create_dataset(
            session=session, store=store, name=split, content=data, n_samples=len(samples)
        ).id
    return ids


@pytest.fixture
def stack(scratch_pg, tmp_path, icu, pretrained) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]  # noqa: F811
    """PostgreSQL registry with v1 active, a `flame serve` process, a Celery worker with its metrics
    port, and Prometheus scraping both every second with the shipped alert rules."""
    prometheus = tool("prometheus")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as e:  # noqa: BLE001 - any failure to connect means the same thing here
        pytest.fail(f"Redis is required and is not reachable at {REDIS_URL} ({e})", pytrace=False)
    url, engine = scratch_pg
    factory, store = make_session_factory(engine), LocalArtifactStore(tmp_path / "artifacts")
    with factory.begin() as s:
        register_pretrained(s, store, pretrained)
        ids = datasets(s, store, icu)
    api_port, worker_port, prom_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAME_", "PROMETHEUS_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        OMP_WAIT_POLICY="PASSIVE",
        FLAME_HOME=str(tmp_path / "home"),
        FLAME_DATABASE_URL=url,
        FLAME_REDIS_URL=REDIS_URL,
        FLAME_ARTIFACT_ROOT=str(store.root),
        FLAME_DEVICE="cpu",
        FLAME_AUTH_ENABLED="false",
    )
    procs: dict[str, subprocess.Popen] = {}
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker", "prometheus")}
    files = {name: path.open("wb") for name, path in logs.items()}  # closed here once the children have them
    procs["api"] = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--no-bootstrap", "--port", str(api_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=files["api"],
    )
    procs["worker"] = start_celery_worker(
        redis_url=REDIS_URL,
        database_url=url,
        artifact_root=str(store.root),
        extra_env={"FLAME_WORKER_METRICS_PORT": str(worker_port), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=files["worker"],
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "flame-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
                    {
                        "job_name": "flame-worker",
                        "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                    },
                ],
            }
        )
    )
    procs["prometheus"] = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=files["prometheus"],
    )
    for f in files.values():
        f.close()
    try:
        yield {
            "api": f"http://127.0.0.1:{api_port}",
            "worker": f"http://127.0.0.1:{worker_port}",
            "prometheus": f"http://127.0.0.1:{prom_port}",
            "procs": procs,
            "factory": factory,
            "settings": Settings(redis_url=REDIS_URL, database_url=url, artifact_root=store.root),
            "datasets": ids,
        }
    finally:
        for name, proc in procs.items():
            print(f"--- {name} (last lines) ---\n{stop(proc, logs[name])}")


def traffic(base: str, icu_data: Any, halt: threading.Event, sent: list[int]) -> None:
    """Predictions for mortality, 4 at a time, until `halt`; one malformed request (422) per round."""
    mods = [x["modalities"] for x in icu_data.splits["test"][:16]]
    with httpx.Client(base_url=base, timeout=30) as client:
        while not halt.is_set():
            threads = [
                threading.Thread(
                    target=lambda i=i: sent.append(
                        client.post(
                            "/predict/mortality", json={"instances": [{"modalities": mods[i]}]}
                        ).status_code
                    )
                )
                for i in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent.append(client.post("/predict/mortality", json={"modalities": {}}).status_code)
            time.sleep(0.2)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {r.text}"
    return body["data"]["result"]


def job_state(factory, job_id: str) -> str:  # type: ignore[no-untyped-def]
    with factory() as s:
        return registry.get_job(session=s, job_id=job_id).state


@pytest.mark.slow
def test_every_dashboard_query_returns_data_from_a_real_prometheus(stack, icu):  # type: ignore[no-untyped-def]  # noqa: F811
    procs, prom, factory = stack["procs"], stack["prometheus"], stack["factory"]
    wait_for(lambda: httpx.get(f"{stack['api']}/readyz", timeout=5).status_code == 200, 60, "the API", procs)
    wait_for(
        lambda: httpx.get(f"{stack['worker']}/healthz", timeout=5).status_code == 200, 60, "the worker", procs
    )
    wait_for(lambda: httpx.get(f"{prom}/-/ready", timeout=5).status_code == 200, 30, "Prometheus", procs)
    targets = wait_for(
        lambda: {r["metric"]["job"] for r in query(prom, "up == 1")} >= {"flame-api", "flame-worker"},
        30,
        "Prometheus to scrape the API and the worker",
        procs,
    )
    assert targets
    halt, sent = threading.Event(), []
    load = threading.Thread(target=traffic, args=(stack["api"], icu, halt, sent), daemon=True)
    load.start()
    try:
        request = {
            "tasks": [LOS],
            "datasets": {"train": stack["datasets"]["train"], "validation": stack["datasets"]["val"]},
            "options": {"epochs": 1, "seed": 0},
        }
        with factory.begin() as s:
            broken = {**request, "datasets": {"train": "no-such-dataset", "validation": "no-such-dataset"}}
            failing = registry.create_job(session=s, kind="stage", request=broken, parent_version="v1").id
            passing = registry.create_job(session=s, kind="stage", request=request, parent_version="v1").id
        time.sleep(2)  # the finished-job series are scraped at 0 before the first job ends
        results = {job_id: enqueue(job_id, settings=stack["settings"]) for job_id in (failing, passing)}
        wait_for(lambda: job_state(factory, failing) == "failed", 60, "the failing job", procs)
        wait_for(lambda: job_state(factory, passing) in ("succeeded", "failed"), 90, "the stage", procs)
        assert job_state(factory, passing) == "succeeded"
        # a failed job is a failure everywhere: its row (above), Celery's result, the metrics (below)
        assert results[failing].get(timeout=10, propagate=False) is not None
        assert results[failing].state == "FAILURE" and results[passing].get(timeout=10) == "v2"
        # the API serves the promoted v2 (NOTIFY), and Prometheus has seen both jobs end
        wait_for(lambda: query(prom, 'flame_model_info{version="v2"} == 1'), 30, "the API to serve v2", procs)
        wait_for(
            lambda: query(prom, 'min(flame_jobs_finished_total{kind="stage",state="succeeded"}) == 1'),
            20,
            "every target to report the succeeded job",
            procs,
        )
        time.sleep(3)  # a few more scrapes of traffic and rule evaluations
    finally:
        halt.set()
        load.join(timeout=30)
    assert sent.count(200) >= 8 and 422 in sent, sent

    empty = [(title, expr) for title, expr in dashboard_queries() if not query(prom, expr)]
    assert not empty, f"dashboard queries with no data: {empty}"

    # the job panels count both jobs from their first event on, once whatever the number of targets
    by_state = {
        r["metric"]["state"]: float(r["value"][1])
        for r in query(prom, 'max by (kind, state) (increase(flame_jobs_finished_total{kind="stage"}[1h]))')
    }
    assert by_state["succeeded"] >= 1 and by_state["failed"] >= 1, by_state
    assert by_state["cancelled"] == 0, by_state
    buckets = 'flame_job_duration_seconds_bucket{kind="stage",state="succeeded"}'
    p95 = query(prom, f"histogram_quantile(0.95, max by (le) (rate({buckets}[1h])))")
    assert math.isfinite(float(p95[0]["value"][1])) and float(p95[0]["value"][1]) > 0
    active = query(prom, "max by (version) (flame_registry_active_info)")
    assert [r["metric"]["version"] for r in active] == ["v2"]
    p = {r["metric"].get("route"): float(r["value"][1]) for r in query(prom, dashboard_queries()[2][1])}
    assert p.get("/predict/{task}", 0) > 0  # the latency panel's p50 over the predictions

    # the shipped alert rules run in this Prometheus: the failed job fires FlameJobsFailing, and no
    # replica is flagged for serving anything but the active version
    rules = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) == 9
    alerts = wait_for(
        lambda: [
            a
            for a in httpx.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            if a["labels"]["alertname"] == "FlameJobsFailing" and a["state"] == "firing"
        ],
        10,
        "FlameJobsFailing to fire",
    )
    assert alerts[0]["labels"]["kind"] == "stage"
    firing = {a["labels"]["alertname"] for a in httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]}
    assert not firing & {"FlameReplicaNotServingActive", "FlameNoModelLoaded", "FlameTargetDown"}, firing
