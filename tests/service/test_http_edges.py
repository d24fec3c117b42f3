"""The HTTP edges over a real uvicorn server: a 500 keeps the client's next request working, logs
hold route templates and never query strings, and no client can grow the metric label set."""

from __future__ import annotations

import json
import logging
import random
import socket
import string
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.cli.serve import UVICORN_OPTIONS, show_token_once
from service.db import load_models, make_engine
from service.logs import JsonFormatter
from service.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Captured(logging.Handler):
    """Every record of the loggers it is attached to, formatted as the service formats them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FastAPI, _Captured]]:
    """The app (empty SQLite registry, no model) under uvicorn with the options `flame serve` uses, plus a
    route that fails the way a bug would."""
    root = tmp_path_factory.mktemp("edges")
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}", artifact_root=root / "artifacts", auth_enabled=False
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    engine.dispose()
    app = create_app(settings, reload_interval_s=3600)

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug")

    captured = _Captured()
    loggers = [logging.getLogger(n) for n in ("flame", "uvicorn", "uvicorn.access")]
    for lg in loggers:
        lg.addHandler(captured)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", **UVICORN_OPTIONS)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", app, captured
    srv.should_exit = True
    thread.join(10)
    for lg in loggers:
        lg.removeHandler(captured)


def test_a_500_closes_cleanly_and_the_next_request_succeeds(server) -> None:  # type: ignore[no-untyped-def]
    url, _, captured = server
    before = len(captured.lines)
    with httpx.Client(base_url=url) as client:  # one keep-alive connection pool, as a real client
        assert client.get("/healthz").status_code == 200
        r = client.get("/boom")
        assert r.status_code == 500 and r.headers["connection"] == "close"
        assert r.json() == {"error": {"code": "internal", "message": "internal server error", "field": None}}
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
    errors = [json.loads(line) for line in captured.lines[before:] if '"level": "ERROR"' in line]
    assert len(errors) == 1 and errors[0]["exc_type"] == "RuntimeError"  # one JSON line, no traceback dump
    assert all("\n" not in line for line in captured.lines[before:])


def test_logs_hold_route_templates_never_query_strings(server) -> None:  # type: ignore[no-untyped-def]
    url, _, captured = server
    before = len(captured.lines)
    with httpx.Client(base_url=url) as client:
        client.post(
            "/predict/mortality?mrn=MRN-4471", content=b"{}", headers={"Content-Type": "application/json"}
        )
        client.get("/jobs/MRN-4471-job")
    wanted = {"/predict/{task}", "/jobs/{job_id}"}

    def routes() -> set[str]:  # the server logs a request just after it answers it
        return {json.loads(line).get("route") for line in captured.lines[before:] if '"flame.access"' in line}

    deadline = time.monotonic() + 5
    while not wanted <= routes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wanted <= routes()
    logged = "\n".join(captured.lines[before:])
    assert "MRN-4471" not in logged and "mrn=" not in logged


def test_random_methods_leave_the_metric_series_unchanged(server) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = server
    rng = random.Random(0)

    def series() -> set[str]:
        text = httpx.get(f"{url}/metrics").text
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("flame_http_")}

    def method() -> str:
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(3, 12)))

    paths = ["/healthz", "/predict/mortality", "/nope"]
    with httpx.Client(base_url=url) as client:
        for path in paths:  # the first odd method on each route creates its `other` series
            client.request(method(), path)
        series()  # and the first scrape its own
        before = series()
        statuses = {client.request(method(), rng.choice(paths)).status_code for _ in range(2000)}
    after = series()
    assert after == before
    # Either the app counted them under `other` (the h11 parser passes any token through), or the
    # HTTP parser refused them before the app (httptools, uvicorn[standard]: 400 for unknown methods).
    assert any('method="other"' in s for s in after) or statuses == {400}, statuses


def test_bootstrap_token_goes_to_a_private_file_when_stdout_is_a_log(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    token = "flm_0123abcd_" + "s" * 43
    show_token_once(token, tmp_path / "bootstrap-admin.token")  # under pytest, stdout is not a terminal
    out = capsys.readouterr()
    assert token not in out.out + out.err and "bootstrap-admin.token" in out.out
    f = tmp_path / "bootstrap-admin.token"
    assert f.read_text().strip() == token and (f.stat().st_mode & 0o777) == 0o600
