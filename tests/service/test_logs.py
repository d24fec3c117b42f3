"""One log format: every line the API server, a Celery worker and `alembic upgrade head` write is a JSON
object (service/logs.py); the server writes one access line per request and never a payload.

Real processes on the real PostgreSQL and Redis, started as in deployment (environment only)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from service.logs import JsonFormatter, configure_logging

from .conftest import PG_URL

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("FLAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
MARKER = "MRN-7731-PAYLOAD"  # in a query string and a body: it must appear in no log line


def _json_lines(output: str) -> list[dict]:
    """Every non-empty line parsed as a JSON object; fails naming the first line that is not one."""
    docs = []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}\nin:\n{output}")
        assert isinstance(doc, dict) and {"time", "level", "logger", "message"} <= doc.keys(), line
        docs.append(doc)
    return docs


def _env(database_url: str, home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLAME_DATABASE_URL": database_url,
        "FLAME_HOME": str(home),
        "FLAME_ARTIFACT_ROOT": str(home / "artifacts"),
        "FLAME_DEVICE": "cpu",
        "FLAME_LOG_LEVEL": "INFO",
        "OMP_WAIT_POLICY": "PASSIVE",
        **extra,
    }


@pytest.fixture(scope="module")
def migrated(pg_admin: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database migrated by `alembic upgrade head` in a subprocess: (url, its output)."""
    name = f"flame_logs_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    home = tmp_path_factory.mktemp("logs-home")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env=_env(url, home),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        yield url, proc.stdout + proc.stderr
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_formatter_keeps_whitelisted_fields_and_names_exceptions_without_tracebacks() -> None:
    record = logging.LogRecord("flame.access", logging.ERROR, __file__, 1, "request %s", ("done",), None)
    record.route, record.status, record.payload = "/predict/{task}", 500, {"mrn": MARKER}
    try:
        raise ValueError(MARKER)
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert doc["message"] == "request done" and doc["level"] == "ERROR" and doc["logger"] == "flame.access"
    assert doc["route"] == "/predict/{task}" and doc["status"] == 500 and doc["exc_type"] == "ValueError"
    assert doc["time"].endswith("Z") and "payload" not in doc and MARKER not in line and "\n" not in line


def test_debug_is_for_our_loggers_only() -> None:
    root, ours = logging.getLogger(), logging.getLogger("flame")
    saved = root.level, ours.level
    try:
        configure_logging("DEBUG")
        assert ours.isEnabledFor(logging.DEBUG) and logging.getLogger("service.jobs").isEnabledFor(
            logging.DEBUG
        )
        assert not logging.getLogger("botocore").isEnabledFor(logging.DEBUG)
        configure_logging("WARNING")
        assert not ours.isEnabledFor(logging.INFO) and not logging.getLogger("celery").isEnabledFor(
            logging.INFO
        )
        with pytest.raises(ValueError, match="FLAME_LOG_LEVEL"):
            configure_logging("LOUD")
    finally:
        root.setLevel(saved[0])
        ours.setLevel(saved[1])
        logging.getLogger("service").setLevel(logging.NOTSET)


def test_alembic_upgrade_logs_json(migrated: tuple[str, str]) -> None:
    _, output = migrated
    docs = _json_lines(output)
    upgrades = [d for d in docs if d["message"].startswith("Running upgrade")]
    assert upgrades and all(d["logger"] == "alembic.runtime.migration" for d in upgrades), docs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {
    # what compose runs (two worker processes and uvicorn's supervisor), and the bare uvicorn command
    # the README mentions: either way one access line per request, no uvicorn access log
    "flame-serve-workers-2": ["-m", "service.cli", "serve", "--no-bootstrap", "--workers", "2"],
    "uvicorn-factory": ["-m", "uvicorn", "service.app:create_app", "--factory"],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_server_writes_one_json_access_line_per_request_and_no_payload(
    migrated: tuple[str, str], tmp_path: Path, launcher: str
) -> None:
    url, _ = migrated
    port = _free_port()
    cmd = [sys.executable, *LAUNCHERS[launcher], "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(url, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the server exited: {server.communicate()}"
            assert time.monotonic() < deadline, "the server did not answer /healthz within 120 s"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        with httpx.Client(base_url=base, timeout=30) as client:
            statuses = [
                client.get("/healthz").status_code,
                client.post(
                    f"/predict/mortality?mrn={MARKER}",
                    content=json.dumps({"mrn": MARKER}).encode(),
                    headers={"Content-Type": "application/json"},
                ).status_code,
                client.get(f"/no/such/{MARKER}").status_code,
                client.get("/metrics").status_code,
                client.get("/healthz").status_code,
            ]
        assert statuses == [200, 401, 404, 200, 200], statuses
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
    docs = _json_lines(out + err)
    access = [d for d in docs if d["logger"] == "flame.access"]
    # the readiness probe's requests, then the five above: one line each, none from uvicorn.access
    probes = len(access) - len(statuses)
    assert probes >= 1 and [d["status"] for d in access[probes:]] == statuses, access
    assert all(d["route"] == "/healthz" for d in access[:probes]), access
    assert not any(d["logger"] == "uvicorn.access" for d in docs)
    assert any(d["message"].startswith("Started server process") for d in docs), docs
    assert MARKER not in out + err


def test_a_celery_worker_logs_json_from_its_first_line(migrated: tuple[str, str], tmp_path: Path) -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as e:  # noqa: BLE001 - any failure to connect means the same thing here
        pytest.fail(f"Redis is required and not reachable at {REDIS_URL} ({e})", pytrace=False)
    url, _ = migrated
    worker = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--pool", "solo"],
        cwd=ROOT,
        env=_env(url, tmp_path, FLAME_REDIS_URL=REDIS_URL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(worker.stderr.readline, "")), daemon=True)
    reader.start()  # stderr read as it comes, so the pipe never fills
    try:
        deadline = time.monotonic() + 90
        while not any(" ready." in line for line in list(lines)):
            assert worker.poll() is None, f"the worker exited: {lines}"
            assert time.monotonic() < deadline, f"the worker was not ready within 90 s: {lines}"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
        reader.join(10)
    docs = _json_lines("".join(lines))
    assert any(d["logger"] == "celery.apps.worker" and d["message"].endswith(" ready.") for d in docs), docs
    assert any(d["logger"].startswith("celery.worker.consumer") for d in docs), docs
    # Celery prints its shutdown notice itself, straight to the process's stdout (no logger); that
    # line is the only output not in JSON.
    printed = [line for line in out.splitlines() if line.strip()]
    assert printed in ([], ["worker: Warm shutdown (MainProcess)"]), printed
