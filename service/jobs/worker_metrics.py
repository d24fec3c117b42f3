"""A Celery worker's HTTP endpoint: `GET /metrics` (Prometheus) and `GET /healthz` (liveness) on
`FLAME_WORKER_METRICS_PORT` (default 9808, 0 = off), started by the worker's main process
(`worker_ready` in service/jobs/celery_app.py).

`/metrics` is the worker process's own metrics plus the registry's, read at scrape time
(service/registry_metrics.py): job counts by state, durations and promotions come from the jobs
table, so a job run in a prefork child is counted here as in every API replica. Like the API's
`/metrics` it has no auth: keep the port inside the network.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.observability import render_metrics
from service.registry_metrics import RegistryCollector

log = logging.getLogger("flame.worker")


class WorkerMetricsServer:
    """A daemon HTTP thread; `start()` raises OSError naming the port when it cannot listen."""

    def __init__(self, *, port: int, session_factory: sessionmaker[Session], host: str = "0.0.0.0") -> None:
        self.port, self.host = port, host
        self.collector = RegistryCollector(session_factory)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WorkerMetricsServer:
        try:
            server = ThreadingHTTPServer((self.host, self.port), _handler(self.collector))
        except OSError as e:
            raise OSError(f"FLAME_WORKER_METRICS_PORT={self.port}: cannot listen on it ({e.strerror})") from e
        server.daemon_threads = True
        self._server, self.port = server, server.server_address[1]  # the port bound, when 0 was asked
        self._thread = threading.Thread(target=server.serve_forever, name="flame-worker-metrics", daemon=True)
        self._thread.start()
        log.info("worker metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(collector: RegistryCollector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                payload, content_type = render_metrics(collector)
                self._answer(200, payload, content_type)
            elif path == "/healthz":
                self._answer(200, json.dumps({"status": "ok"}).encode(), "application/json")
            else:
                self._answer(404, b'{"error": "not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass  # one line per scrape would drown the worker's log

    return Handler
