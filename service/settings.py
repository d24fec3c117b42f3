"""Service configuration, read once from `FLAME_*` environment variables (or a `.env` file).

One `Settings` object holds every knob of the API and the worker, so a deployment is described by
its environment alone (docs/design.md s6). Nothing here touches the database or the disk at import time.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_LOG_LEVELS = {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}

PositiveInt = Annotated[int, Field(gt=0)]


def default_home() -> Path:
    """`$XDG_DATA_HOME/flame` (default `~/.local/share/flame`): one registry per user, whatever the
    current folder, so `flame serve`, `flame keys` and `flame worker` run anywhere find the same one."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "flame"


class Settings(BaseSettings):
    """Every setting has a default that runs the whole service on one machine with no extra infra."""

    model_config = SettingsConfigDict(env_prefix="FLAME_", env_file=".env", extra="ignore")

    # storage: `home` holds the SQLite registry, the artifacts and the bootstrap token unless
    # database_url / artifact_root point elsewhere (both default from it, see _defaults_from_home)
    home: Path = Field(default_factory=default_home)
    database_url: str = ""  # default: sqlite:///<home>/registry.db
    redis_url: str | None = None  # unset: jobs run on an in-process queue
    artifact_root: Path = Path()  # default: <home>/artifacts
    # s3://bucket/prefix: artifacts in an S3-compatible bucket (endpoint, region and credentials from
    # AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), read through this
    # host's cache in artifact_cache; unset: the local folder artifact_root (service/artifact_stores.py)
    artifact_url: str | None = None
    artifact_cache: Path = Path()  # default: <home>/artifact-cache
    # `flame bootstrap` (and `flame serve` on an empty SQLite registry) registers this directory, as
    # written by `flame train` or `flame continual`, instead of training the demo model
    bootstrap_model_dir: Path | None = None

    # inference
    device: str = "auto"
    # torch intra-op threads per process (service/runtime.py): every API worker uses it; training
    # (`flame train`, `flame continual`, `flame worker`) keeps torch's default unless it is set
    torch_threads: PositiveInt = 1
    max_body_bytes: PositiveInt = 10 * 1024 * 1024
    max_dataset_bytes: PositiveInt = 512 * 1024 * 1024
    max_model_bytes: PositiveInt = 2 * 1024 * 1024 * 1024  # a checkpoint uploaded to POST /models
    max_instances: PositiveInt = 64
    # the micro-batcher (service/inference/batcher.py): a forward pass takes up to max_batch_size
    # instances, waiting at most max_wait_ms for more while requests are on their way; a task queues
    # at most max_queue_depth requests (beyond: 429 with Retry-After). A request not started within
    # predict_deadline_ms (or its X-Flame-Deadline-Ms header, if shorter) is dropped: 504.
    max_batch_size: PositiveInt = 32
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=10_000.0)
    max_queue_depth: PositiveInt = 1024
    predict_deadline_ms: float = Field(default=30_000.0, gt=0.0, le=3_600_000.0)
    # batch-invariant serving: a prediction's bits never depend on the requests batched with it
    # (fixed padding per modality, whole row tiles); false pads to each batch's longest sample
    batch_invariant: bool = True

    # continual learning: the most rank any single weight may accumulate over all stages
    capacity_rank_budget: PositiveInt | None = 64

    # security and operations
    auth_enabled: bool = True
    log_level: str = "INFO"

    # database outages: an API key is re-checked against the database at most every auth_cache_ttl_s
    # (so a revocation reaches every replica within it); while the database is unreachable, a key
    # verified within auth_outage_grace_s keeps working. Audit rows wait in audit_spool_path (default
    # <artifact_root>/audit-spool.jsonl) until the database is back.
    auth_cache_ttl_s: float = Field(default=5.0, ge=0.0, le=3600.0)
    auth_outage_grace_s: float = Field(default=300.0, ge=0.0, le=86_400.0)
    audit_spool_path: Path | None = None

    # training jobs (service.registry.leases): every progress report of a running job is a heartbeat,
    # and a background thread beats every job_heartbeat_timeout_s / 4 through slow epochs. A job
    # whose heartbeat is older than the timeout lost its worker: a reaper (every timeout / 2, in each
    # API process and each worker) re-queues it, or fails it once it has had job_max_attempts. The
    # Celery broker redelivers an unacknowledged job after job_visibility_timeout_s: above the
    # longest stage, so a long stage is never started twice by the broker.
    job_heartbeat_timeout_s: float = Field(default=120.0, ge=0.5, le=86_400.0)
    job_max_attempts: PositiveInt = 3
    job_visibility_timeout_s: PositiveInt = 12 * 3600
    # a Celery worker serves /metrics and /healthz over HTTP on this port (all interfaces), for
    # Prometheus and compose's healthcheck (service/jobs/worker_metrics.py); 0 turns it off
    worker_metrics_port: int = Field(default=9808, ge=0, le=65535)

    @model_validator(mode="after")
    def _visibility_above_heartbeat(self) -> Settings:
        if self.job_visibility_timeout_s <= self.job_heartbeat_timeout_s:
            raise ValueError(
                f"job_visibility_timeout_s ({self.job_visibility_timeout_s}) must exceed "
                f"job_heartbeat_timeout_s ({self.job_heartbeat_timeout_s})"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_home(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        home = Path(data.get("home") or default_home()).expanduser().absolute()
        data = {**data, "home": home}
        if not data.get("database_url"):
            data["database_url"] = f"sqlite:///{home / 'registry.db'}"
        if not data.get("artifact_root"):
            data["artifact_root"] = home / "artifacts"
        if not data.get("artifact_cache"):
            data["artifact_cache"] = home / "artifact-cache"
        if not data.get("bootstrap_model_dir"):
            data["bootstrap_model_dir"] = None
        return data

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError(f"database_url must be a sqlite:// or postgresql:// URL, got {value!r}")
        return value

    @field_validator("artifact_url")
    @classmethod
    def _check_artifact_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        bucket = value.removeprefix("s3://").partition("/")[0]
        if not value.startswith("s3://") or not _BUCKET.match(bucket) or ".." in bucket:
            raise ValueError(
                f"FLAME_ARTIFACT_URL must be s3://bucket or s3://bucket/prefix (bucket: 3-63 lowercase "
                f"letters, digits, dots or hyphens), got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _blank_redis_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {sorted(_LOG_LEVELS)}, got {value!r}")
        return value.upper()

    @property
    def job_heartbeat_interval_s(self) -> float:
        return self.job_heartbeat_timeout_s / 4

    @property
    def job_reap_interval_s(self) -> float:
        return self.job_heartbeat_timeout_s / 2


def describe_invalid(error: ValidationError) -> str:
    """A settings error as one line that names each variable to fix (FLAME_<FIELD>)."""
    parts = []
    for err in error.errors():
        name = "FLAME_" + "_".join(str(x) for x in err["loc"]).upper() if err["loc"] else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(message if not name or name in message else f"{name}: {message}")
    return "invalid setting: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build `Settings(...)` directly or call `cache_clear()`."""
    return Settings()
