"""One log format for every process (docs/design.md s7): a JSON object per line on stderr.

The API (its own loggers and uvicorn's), the Celery worker (service/jobs/celery_app.py hands Celery's
logging set-up to `configure_logging`) and Alembic (migrations/env.py) all log through one handler on
the root logger with `JsonFormatter`, built on python-json-logger. A line holds the time, level,
logger and message plus only the whitelisted fields below: extras that other code attaches to a
record never reach the log, and an exception is named (`exc_type`) without its traceback, whose
locals and messages may hold patient values. uvicorn's access log is off: the API writes one access
line per request itself (service.observability.ObservabilityMiddleware).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

# What a log line may carry besides time, level, logger and message: who, which route/task/version,
# which modalities, how long. Never ids of patients, query strings or payloads.
LOG_FIELDS = (
    "request_id",
    "route",
    "method",
    "status",
    "latency_ms",
    "task",
    "version",
    "instances",
    "modalities_present",
    "modalities_missing",
    "caller",
)
_BASE = ("time", "level", "logger", "message")
_ALLOWED = frozenset((*_BASE, *LOG_FIELDS, "exc_type"))
_HANDLER_MARK = "_flame_json"


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger's formatter, limited to `time`, `level`, `logger`, `message`, `LOG_FIELDS`
    and `exc_type` (UTC times, e.g. 2026-01-31T12:00:00Z)."""

    converter = time.gmtime  # type: ignore[assignment]  # logging's documented way to log UTC

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%SZ",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        if record.exc_info and record.exc_info[0] is not None:
            log_data["exc_type"] = record.exc_info[0].__name__

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in log_data.items() if k in _ALLOWED}


def configure_logging(level: str | int = "INFO") -> None:
    """JSON lines on stderr for every logger (idempotent: one handler however often it is called),
    at `level` for FLAME's loggers and at least INFO for the others.

    Handlers other libraries put on the root logger stay (pytest's capture, for one); uvicorn's own
    handlers go, so its lines propagate to ours, and its access logger is silenced."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    elif isinstance(handler, logging.StreamHandler):
        handler.setStream(sys.stderr)  # the current stderr (a test runner may have swapped it)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (FLAME_LOG_LEVEL)")
    # DEBUG is for our own loggers: a library's debug lines (an HTTP client's) may carry request bodies
    root.setLevel(max(numeric, logging.INFO))
    for name in ("flame", "service"):
        logging.getLogger(name).setLevel(numeric)
    logging.captureWarnings(True)  # Python warnings (a library's, Celery's) as JSON lines too
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False  # one access line per request: ours, with the route template
