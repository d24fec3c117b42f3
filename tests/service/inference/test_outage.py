"""Predictions through a PostgreSQL outage: a private cluster is the registry, and it is stopped while
the app serves. Predictions with a recently used key still answer 200, a route that needs the database
answers 503 database_unavailable with Retry-After, /healthz stays up; when the cluster is back the
audit writer replays its spool and every prediction made has exactly one audit row.

The cluster is our own (initdb in a temp dir, a free port), never the shared one on 5432."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import build_demo_model, register_model
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.inference.models import PredictionAudit
from service.settings import Settings

PG_BIN = Path(os.environ.get("FLAME_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)


def _as_postgres(*cmd: object) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    args = [str(c) for c in cmd]
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimpleNamespace]:
    root = Path(tempfile.mkdtemp(prefix="flame-outage-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()

    def run(*cmd: object) -> None:
        done = subprocess.run(_as_postgres(*cmd), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"

    def start() -> None:
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        run(
            PG_BIN / "pg_ctl", "-D", data, "-w", "-t", "60", "-l", root / "server.log", "-o", options, "start"
        )

    def stop() -> None:
        run(PG_BIN / "pg_ctl", "-D", data, "-w", "-t", "60", "-m", "fast", "stop")

    run(PG_BIN / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
    start()
    try:
        yield SimpleNamespace(
            url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", start=start, stop=stop
        )
    finally:
        status = subprocess.run(_as_postgres(PG_BIN / "pg_ctl", "-D", data, "status"), capture_output=True)
        if status.returncode == 0:
            stop()
        shutil.rmtree(root, ignore_errors=True)


def test_predictions_survive_a_database_outage(cluster, tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=cluster.url,
        artifact_root=tmp_path / "artifacts",
        device="cpu",
        auth_cache_ttl_s=0.5,
        auth_outage_grace_s=300.0,
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    cl, _ = build_demo_model(n=200, epochs=0, config=TINY)
    register_model(session_factory=factory, store=LocalArtifactStore(settings.artifact_root), cl=cl)
    with session_scope(factory) as s:
        tokens = {
            n: create_api_key(session=s, name=n, scopes=[scope])[1]
            for n, scope in (("predict", "predict"), ("train", "train"), ("unseen", "predict"))
        }
    auth = {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}
    sample = {"modalities": load_benchmark("synthetic-icu", n=200).splits["test"][0]["modalities"]}
    app = create_app(settings, reload_interval_s=3600)
    made: list[str] = []

    def predict(client: TestClient, n: int) -> None:
        rid = f"outage-{n}"
        r = client.post("/predict/mortality", json=sample, headers={**auth["predict"], "X-Request-ID": rid})
        assert r.status_code == 200, r.text
        made.append(rid)

    def audit_counts() -> dict[str, int]:
        with factory() as s:
            rows = s.execute(
                select(PredictionAudit.request_id, func.count()).group_by(PredictionAudit.request_id)
            )
            return dict(rows.all())

    with TestClient(app) as client:
        writer = app.state.audit_writer
        for n in range(3):
            predict(client, n)
        assert client.get("/models", headers=auth["train"]).status_code == 200
        writer.flush()
        assert audit_counts() == {rid: 1 for rid in made}

        cluster.stop()
        predict(client, 3)
        time.sleep(0.6)  # past the keys' TTL: each is re-checked, and the database is gone
        for n in range(4, 13):
            predict(client, n)
        r = client.get("/models", headers=auth["train"])
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json() == {
            "error": {
                "code": "database_unavailable",
                "message": "the database is unavailable; retry later",
                "field": None,
            }
        }
        r = client.post("/predict/mortality", json=sample, headers=auth["unseen"])
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"  # unverifiable
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 503
        writer.flush()
        assert writer.spooled() == 10

        cluster.start()
        writer.flush()  # replays the spool
        assert writer.spooled() == 0
        predict(client, 13)
        assert client.get("/models", headers=auth["train"]).status_code == 200
    # Leaving the client ran the lifespan's shutdown, which flushed the writer.
    assert len(made) == 14 and audit_counts() == {rid: 1 for rid in made}
    engine.dispose()
