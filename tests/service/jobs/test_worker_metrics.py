"""The worker's HTTP endpoint: /metrics carries the registry's job metrics, /healthz answers, other
paths are 404, and a port already taken is an error naming FLAME_WORKER_METRICS_PORT."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from service.jobs.worker_metrics import WorkerMetricsServer
from service.registry import service as registry


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_and_healthz(session_factory):  # type: ignore[no-untyped-def]
    with session_factory.begin() as s:
        job = registry.create_job(session=s, kind="stage", request={})
        registry.mark_failed(session=s, job_id=job.id, error="queue full")
    server = WorkerMetricsServer(port=0, host="127.0.0.1", session_factory=session_factory).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, text = get(base + "/metrics")
        assert status == 200
        assert 'flame_jobs_finished_total{kind="stage",state="failed"} 1.0' in text
        assert 'flame_jobs_finished_total{kind="stage",state="succeeded"} 0.0' in text
        assert "flame_registry_up 1.0" in text
        status, text = get(base + "/healthz")
        assert status == 200 and json.loads(text) == {"status": "ok"}
        assert get(base + "/nothing")[0] == 404
    finally:
        server.stop()


def test_a_taken_port_is_an_error_naming_the_setting(session_factory):  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WorkerMetricsServer(port=port, host="127.0.0.1", session_factory=session_factory)
        with pytest.raises(OSError, match=f"FLAME_WORKER_METRICS_PORT={port}"):
            server.start()
