"""Settings come from FLAME_* environment variables with defaults that run on one machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, get_settings


def test_defaults_need_no_infrastructure(monkeypatch, tmp_path):
    for var in ("FLAME_HOME", "FLAME_DATABASE_URL", "FLAME_ARTIFACT_ROOT", "FLAME_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    for var in ("FLAME_AUTH_ENABLED", "FLAME_DEVICE", "FLAME_BOOTSTRAP_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # the current folder plays no part
    s = Settings(_env_file=None)
    assert s.home == tmp_path / "xdg" / "flame"
    assert s.database_url == f"sqlite:///{tmp_path}/xdg/flame/registry.db"
    assert s.redis_url is None and s.artifact_root == tmp_path / "xdg" / "flame" / "artifacts"
    assert (s.device, s.auth_enabled, s.capacity_rank_budget) == ("auto", True, 64)
    assert s.bootstrap_model_dir is None
    monkeypatch.delenv("XDG_DATA_HOME")
    assert Settings(_env_file=None).home == Path.home() / ".local" / "share" / "flame"


def test_flame_home_places_registry_and_artifacts_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAME_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("FLAME_BOOTSTRAP_MODEL_DIR", "")  # as compose passes an unset variable
    s = Settings(_env_file=None)
    assert (s.database_url, s.artifact_root) == (
        f"sqlite:///{tmp_path}/h/registry.db",
        tmp_path / "h" / "artifacts",
    )
    assert s.bootstrap_model_dir is None
    monkeypatch.setenv("FLAME_DATABASE_URL", "postgresql+psycopg://u@db/flame")
    monkeypatch.setenv("FLAME_ARTIFACT_ROOT", str(tmp_path / "blobs"))
    monkeypatch.setenv("FLAME_BOOTSTRAP_MODEL_DIR", str(tmp_path / "run"))
    s = Settings(_env_file=None)
    assert (s.home, s.database_url) == (tmp_path / "h", "postgresql+psycopg://u@db/flame")
    assert (s.artifact_root, s.bootstrap_model_dir) == (tmp_path / "blobs", tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert Settings(_env_file=None, home="rel").home == tmp_path / "rel"  # made absolute once


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
