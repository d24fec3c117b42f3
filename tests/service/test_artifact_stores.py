"""One factory for every process's artifact store, and its start-up check on a real S3 server.

FLAME_ARTIFACT_URL picks the store (unset: the local folder); a bad URL is a settings error naming
the variable; a missing bucket, an unreachable endpoint or bad credentials stop the api, the worker
and the CLI at start with one line that names the bucket, the endpoint and the variable to fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.artifact_stores import StoreUnavailable, build_store, open_store
from service.artifacts import LocalArtifactStore
from service.artifacts_s3 import S3ArtifactStore
from service.cli.registry import run_migrations
from service.settings import Settings

from .s3_server import free_port, s3_bucket, s3_endpoint, s3_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def test_the_factory_picks_the_store_from_one_setting(tmp_path):
    local = build_store(Settings(home=tmp_path, database_url="sqlite://"))
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "artifacts"
    settings = Settings(home=tmp_path, database_url="sqlite://", artifact_url="s3://models/flame/prod/")
    assert settings.artifact_cache == tmp_path / "artifact-cache"
    s3 = build_store(settings)
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.bucket, s3.prefix, s3.cache.root) == ("models", "flame/prod", tmp_path / "artifact-cache")
    assert s3.key("ab" + "c" * 62) == "flame/prod/ab/" + "c" * 62
    bare = build_store(Settings(home=tmp_path, artifact_url="s3://models", artifact_cache=tmp_path / "c"))
    assert isinstance(bare, S3ArtifactStore) and bare.key("ab" + "c" * 62) == "ab/" + "c" * 62
    assert bare.cache.root == tmp_path / "c"
    assert Settings(home=tmp_path, artifact_url="").artifact_url is None  # blank: the local default


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3://Upper/x", "s3://ab", "bucket/prefix"])
def test_a_bad_artifact_url_names_the_variable(url, tmp_path):
    with pytest.raises(ValidationError, match="FLAME_ARTIFACT_URL must be s3://bucket"):
        Settings(home=tmp_path, artifact_url=url)


def test_a_missing_bucket_or_endpoint_is_one_clear_line(s3_bucket, s3_endpoint, tmp_path, monkeypatch):  # noqa: F811
    settings = Settings(home=tmp_path, artifact_url=f"s3://{s3_bucket}-missing/p")
    with pytest.raises(StoreUnavailable) as e:
        open_store(settings)
    message = str(e.value)
    assert f"bucket '{s3_bucket}-missing' at {s3_endpoint} does not exist" in message
    assert "FLAME_ARTIFACT_URL" in message and "\n" not in message
    assert isinstance(open_store(Settings(home=tmp_path, artifact_url=f"s3://{s3_bucket}")), S3ArtifactStore)

    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    with pytest.raises(StoreUnavailable) as e:
        open_store(Settings(home=tmp_path, artifact_url=f"s3://{s3_bucket}"))
    assert f"cannot reach the artifact bucket '{s3_bucket}' at {closed}" in str(e.value)
    assert "check AWS_ENDPOINT_URL" in str(e.value) and "\n" not in str(e.value)


def test_the_api_refuses_to_start_on_a_missing_bucket(s3_bucket, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    settings = Settings(home=home, artifact_url=f"s3://{s3_bucket}-gone", device="cpu")
    refused = pytest.raises(StoreUnavailable, match=f"bucket '{s3_bucket}-gone' .* does not exist")
    with refused, TestClient(create_app(settings)):
        pass
    # it stopped before opening the registry: only the (empty) cache folder was made
    assert sorted(p.name for p in home.iterdir()) == ["artifact-cache"]


def flame(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `flame` command as an operator runs it: a fresh process that knows only its environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLAME_", "AWS_"))}
    clean.update(env, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE", FLAME_DEVICE="cpu")
    cmd = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=clean, capture_output=True, text=True, timeout=120)


def test_every_command_that_uses_the_store_stops_with_one_line(s3_bucket, s3_endpoint, tmp_path):  # noqa: F811
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    run_migrations(url)  # `flame worker` checks the registry first
    env = {
        **s3_env(s3_endpoint),
        "FLAME_DATABASE_URL": url,
        "FLAME_HOME": str(tmp_path / "home"),
        "FLAME_REDIS_URL": "redis://127.0.0.1:6379/13",
        "FLAME_ARTIFACT_URL": f"s3://{s3_bucket}-gone/flame",
    }
    commands = [["serve"], ["bootstrap"], ["worker"], ["models", "register", str(tmp_path)]]
    for args in commands:
        r = flame(*args, cwd=tmp_path, env=env)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert f"bucket '{s3_bucket}-gone' at {s3_endpoint} does not exist" in r.stderr, r.stderr
        assert "FLAME_ARTIFACT_URL" in r.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    r = flame("worker", cwd=tmp_path, env={**env, "AWS_ENDPOINT_URL": closed})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"cannot reach the artifact bucket '{s3_bucket}-gone' at {closed}" in r.stderr
    assert "check AWS_ENDPOINT_URL" in r.stderr
    assert not (tmp_path / "home" / "artifacts").exists()  # nothing fell back to a local store


def test_a_bad_artifact_url_stops_a_command_with_one_line(tmp_path):
    r = flame("models", "list", cwd=tmp_path, env={"FLAME_ARTIFACT_URL": "https://bucket.example.com/x"})
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.strip() == (
        "error: invalid setting: FLAME_ARTIFACT_URL must be s3://bucket or s3://bucket/prefix (bucket: "
        "3-63 lowercase letters, digits, dots or hyphens), got 'https://bucket.example.com/x'"
    )
