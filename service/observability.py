"""Metrics, request ids and the access log line (docs/design.md s7).

Every metric carries the `flame_` prefix, base units and bounded labels (route templates, task and
modality names the model declares, expert indices; never ids or payloads). With
`PROMETHEUS_MULTIPROC_DIR` set (several uvicorn/gunicorn workers), `/metrics` aggregates every
process's files through prometheus-client's multiprocess collector. Logs (service/logs.py) are one
JSON object per line and never hold payloads: only who, which route/task/version, which modalities,
how long; each request is one access line.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import internal_error
from service.logs import LOG_FIELDS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DEPTH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

HTTP_REQUESTS = Counter(
    "flame_http_requests",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "flame_http_request_duration_seconds",
    "HTTP request latency by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
PREDICT_DURATION = Histogram(
    "flame_predict_duration_seconds",
    "Prediction latency per task and stage (validate, forward).",
    ["task", "stage"],
    buckets=LATENCY_BUCKETS,
)
PREDICT_BATCH_SIZE = Histogram(
    "flame_predict_batch_size", "Instances per forward pass.", buckets=BATCH_BUCKETS
)
MODALITY_PRESENCE = Counter(
    "flame_modality_presence",
    "Per predicted instance: each modality of the task, present or missing.",
    ["task", "modality", "state"],
)
EXPERT_SELECTIONS = Counter(
    "flame_expert_selections", "Top-k expert picks per modality (last block).", ["modality", "expert"]
)
NONFINITE_PREDICTIONS = Counter(
    "flame_predictions_nonfinite",
    "Instances whose model output was not finite (answered 422, never shown as a prediction).",
    ["task"],
)
# Gauges with several processes: live* modes drop a process's values once it is marked dead
# (`worker_exiting`); `livemax` keeps a version at 1 while any live worker holds it, with no pid label.
MODEL_INFO = Gauge(
    "flame_model_info",
    "The served model version (1 for the version held now).",
    ["version"],
    multiprocess_mode="livemax",
)
QUEUE_DEPTH = Gauge(
    "flame_queue_depth",
    "Prediction requests waiting in a task queue for their forward pass, now. The batcher takes them "
    "as soon as the forward before them ends, so a scrape mostly finds 0 even under load: read "
    "flame_predict_queue_depth for the depth requests met.",
    multiprocess_mode="livesum",
)
# Job counts, durations, promotions and the registry's `active` version are read from the registry at
# scrape time (service/registry_metrics.py), so every target agrees whatever process ran the job.

# What a clinician reads beside each prediction (service/inference/service.py `judge`).
PREDICTIONS = Counter("flame_predictions", "Instances predicted, per task.", ["task"])
SHIFTED = Counter(
    "flame_prediction_shift",
    "Predictions whose inputs are outside the task's training distribution (shift score above the "
    "threshold); divide by flame_predictions_total for the share flagged.",
    ["task"],
)
# The micro-batcher (service/inference/batcher.py).
PREDICT_REJECTED = Counter(
    "flame_predict_rejected",
    "Prediction requests not computed: overloaded (queue full, 429) or deadline (expired, 504).",
    ["task", "reason"],
)
PREDICT_QUEUE_SECONDS = Histogram(
    "flame_predict_queue_seconds",
    "Time a prediction request waited in its task's queue before its forward pass began.",
    ["priority"],
    buckets=LATENCY_BUCKETS,
)
PREDICT_QUEUE_DEPTH = Histogram(
    "flame_predict_queue_depth",
    "Requests in its task's queue when a prediction request joined it, itself included (1: no wait "
    "behind others). Every request is observed, so this sees the load that scrapes of "
    "flame_queue_depth miss.",
    buckets=DEPTH_BUCKETS,
)
# The prediction audit writer (service/inference/audit_writer.py): rows committed to the database,
# spooled to the local file because the database refused them, replayed from the spool, or lost.
AUDIT_ROWS = Counter(
    "flame_audit_rows",
    "Prediction audit rows by outcome: written, spooled (database insert failed), replayed (from the "
    "spool), dropped (neither database nor spool took them).",
    ["outcome"],
)
for _outcome in ("written", "spooled", "replayed", "dropped"):
    AUDIT_ROWS.labels(_outcome)  # every series exists from the start, at zero


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def prepare_multiprocess_dir(default: Path) -> Path:
    """Before several API workers start: the user's PROMETHEUS_MULTIPROC_DIR or `default`, emptied of
    an earlier run's files, exported so every worker (spawned after this) writes its metrics there."""
    path = Path(multiprocess_dir() or default)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):  # only prometheus-client's files: the user's folder may hold more
        old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def worker_exiting() -> None:
    """A worker shutting down drops its live gauges (queue depth, model version); its counters and
    histograms stay counted. A worker killed without a shutdown (SIGKILL, OOM) keeps its gauge
    files until the next `flame serve --workers N` empties the folder."""
    if multiprocess_dir():
        prom_multiprocess.mark_process_dead(os.getpid())


def render_metrics(*collectors: Collector) -> tuple[bytes, str]:
    """The exposition text: this process's metrics (with several processes, every process's summed or
    listed), then `collectors`' (e.g. the registry's, read at scrape time, once per scrape)."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if collectors:
        extra = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            extra.register(collector)
        text += generate_latest(extra)
    return text, CONTENT_TYPE_LATEST


def set_model_version(version: str, previous: str | None, tasks: Iterable[str] = ()) -> None:
    """`flame_model_info{version}` is 1 for the held version only; the per-task counters of the
    version's `tasks` exist from now on, at 0 until counted (so rates and ratios have a series)."""
    for task in tasks:
        for counter in (PREDICTIONS, SHIFTED, NONFINITE_PREDICTIONS):
            counter.labels(task=task)
        for reason in ("overloaded", "deadline"):
            PREDICT_REJECTED.labels(task=task, reason=reason)
    if previous is not None and previous != version:
        if multiprocess_dir():
            MODEL_INFO.labels(version=previous).set(0)
        else:
            with contextlib.suppress(KeyError):
                MODEL_INFO.remove(previous)
    MODEL_INFO.labels(version=version).set(1)


access_log = logging.getLogger("flame.access")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _RequestIds:
    """32 hex digits: a random per-process prefix (renewed in a forked child) and a counter. Unique
    like a uuid4, but with no system call per request (`os.urandom` drops the GIL, and getting it back
    from the inference thread can take a switch interval)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


new_request_id = _RequestIds()


class ObservabilityMiddleware:
    """Request id (honours a safe incoming `X-Request-ID`), HTTP metrics by route template, access log.

    Pure ASGI (no BaseHTTPMiddleware) so streaming and the body-size limit behave. Routes that match
    nothing are counted as `route="unmatched"` to keep the label set bounded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status: dict[str, Any] = {"code": 500, "started": False}
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        error: Exception | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 and the connection stays sane
            error = exc  # named in the request's one access line, below
            if status.get("started"):
                return  # the body was under way: nothing more can be said on this response
            await internal_error()(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            method = method if method in HTTP_METHODS else "other"  # a label set no client can grow
            HTTP_REQUESTS.labels(route=route, method=method, status=str(status["code"])).inc()
            HTTP_DURATION.labels(route=route, method=method).observe(elapsed)
            extra = {k: v for k, v in state.get("log", {}).items() if k in LOG_FIELDS}
            access_log.log(
                logging.ERROR if error else logging.INFO,
                "unhandled error" if error else "request",
                exc_info=error,
                extra={
                    "request_id": request_id,
                    "route": route,
                    "method": method,
                    "status": status["code"],
                    "latency_ms": round(elapsed * 1000, 3),
                    **extra,
                },
            )
