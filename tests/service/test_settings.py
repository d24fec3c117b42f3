"""Settings come from FLAME_* environment variables with defaults that run on one machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, get_settings


def test_defaults_need_no_infrastructure(monkeypatch):
    for var in ("FLAME_DATABASE_URL", "FLAME_REDIS_URL", "FLAME_AUTH_ENABLED", "FLAME_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    s = Settings(_env_file=None)
    assert s.database_url == "sqlite:///./flame-data/registry.db"
    assert s.redis_url is None and s.artifact_root == Path("flame-data/artifacts")
    assert (s.device, s.auth_enabled, s.capacity_rank_budget) == ("auto", True, 64)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("FLAME_DATABASE_URL", "postgresql+psycopg://u@db/flame")
    monkeypatch.setenv("FLAME_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("FLAME_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("FLAME_AUTH_ENABLED", "false")
    monkeypatch.setenv("FLAME_LOG_LEVEL", "debug")
    s = Settings(_env_file=None)
    assert s.database_url.startswith("postgresql") and s.redis_url == "redis://r:6379/0"
    assert (s.max_batch_size, s.auth_enabled, s.log_level) == (8, False, "DEBUG")
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings() and get_settings().max_batch_size == 8
    finally:
        get_settings.cache_clear()


def test_outage_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAME_AUTH_CACHE_TTL_S", "2.5")
    monkeypatch.setenv("FLAME_AUTH_OUTAGE_GRACE_S", "60")
    monkeypatch.setenv("FLAME_AUDIT_SPOOL_PATH", str(tmp_path / "spool.jsonl"))
    s = Settings(_env_file=None)
    assert (s.auth_cache_ttl_s, s.auth_outage_grace_s) == (2.5, 60.0)
    assert s.audit_spool_path == tmp_path / "spool.jsonl"
    monkeypatch.setenv("FLAME_AUTH_CACHE_TTL_S", "-1")
    with pytest.raises(ValidationError, match="auth_cache_ttl_s"):
        Settings(_env_file=None)


@pytest.mark.parametrize(
    "var,value,field",
    [
        ("FLAME_DEVICE", "gpu", "device"),
        ("FLAME_DATABASE_URL", "mysql://x", "database_url"),
        ("FLAME_MAX_BATCH_SIZE", "0", "max_batch_size"),
        ("FLAME_LOG_LEVEL", "chatty", "log_level"),
    ],
)
def test_bad_values_name_the_field(monkeypatch, var, value, field):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=field):
        Settings(_env_file=None)
