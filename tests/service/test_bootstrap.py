"""A stack that serves from its first start, and one registry location for every command.

The compose start sequence (migrate, bootstrap, serve) runs as the same commands against a fresh
PostgreSQL database and serves a prediction; bootstrap run again changes nothing. Every command
finds the registry through FLAME_HOME / FLAME_DATABASE_URL whatever the current folder; with no
usable registry, every command but bootstrap and serve prints one line, exits 2 and creates nothing.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from service.app import create_app
from service.auth.service import authenticate
from service.cli.registry import alembic_config, run_migrations
from service.db import make_engine, make_session_factory
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = {
    "modalities": {"labs": {"values": [0.4, -1.2, None, 0.8, 0.0, 1.5, -0.3, None, 0.9, 0.1, -0.7, 0.2]}}
}


def flame(*args: str, cwd: Path, **env: object) -> subprocess.CompletedProcess[str]:
    """A command as an operator runs it: a fresh process that knows only its environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLAME_")}
    clean.update({f"FLAME_{k.upper()}": str(v) for k, v in env.items()})
    clean.update(PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE", FLAME_DEVICE="cpu")
    module = ["-m", "alembic"] if args[0] == "alembic" else ["-m", "service.cli"]
    cmd = [sys.executable, *module, *args[1:]] if args[0] == "alembic" else [sys.executable, *module, *args]
    return subprocess.run(cmd, cwd=cwd, env=clean, capture_output=True, text=True, timeout=300)


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        tables = ("model_versions", "aliases", "alias_history", "api_keys", "tasks")
        out = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}
    engine.dispose()
    return out


def test_compose_start_sequence_serves_from_a_fresh_postgres(fresh_database, trained_run, tmp_path):
    env = {
        "database_url": fresh_database,
        "home": tmp_path / "data",
        "artifact_root": tmp_path / "data" / "artifacts",
    }
    env["bootstrap_model_dir"] = trained_run  # compose: FLAME_BOOTSTRAP_MODEL_DIR
    migrate = flame("alembic", "upgrade", "head", cwd=ROOT, **env)  # the `migrate` service
    assert migrate.returncode == 0, migrate.stderr
    first = flame("bootstrap", cwd=tmp_path, **env)  # the one-shot `bootstrap` service
    assert first.returncode == 0, first.stderr
    token_file = tmp_path / "data" / "bootstrap-admin.token"
    assert f"registered {trained_run} as v1" in first.stdout and str(token_file) in first.stdout
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("flm_") and token not in first.stdout + first.stderr

    settings = Settings(_env_file=None, device="cpu", **{k: str(v) for k, v in env.items()})
    with TestClient(create_app(settings, reload_interval_s=3600)) as api:  # the `api` service
        assert api.get("/readyz").status_code == 200
        r = api.post("/predict/mortality", json=SAMPLE, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["model_version"] == "v1", r.text
    before = counts(fresh_database)
    assert before == {"model_versions": 1, "aliases": 1, "alias_history": 1, "api_keys": 1, "tasks": 5}

    token_file.unlink()
    again = flame("bootstrap", cwd=tmp_path, **env)  # `docker compose up` once more
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert counts(fresh_database) == before and not token_file.exists()


@pytest.mark.slow  # trains the demo model (~30 s on two cores): compose's default
def test_bootstrap_twice_on_sqlite_registers_the_demo_once(tmp_path):
    env = {"home": tmp_path / "home"}
    first = flame("bootstrap", "--demo", cwd=tmp_path, **env, auth_enabled="false")
    assert first.returncode == 0 and "registered demo model v1" in first.stdout, first.stderr
    url = f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    before = counts(url)
    again = flame("bootstrap", cwd=tmp_path, **env, auth_enabled="false")
    assert again.returncode == 0 and "nothing to do" in again.stdout and counts(url) == before


def test_keys_create_from_another_folder_finds_the_registry(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{home / 'registry.db'}"
    run_migrations(url)
    engine = make_engine(url)
    for where in ({"home": home}, {"database_url": url, "home": tmp_path / "unused"}):
        r = flame(
            "keys",
            "create",
            "--name",
            "ehr",
            "--scope",
            "predict",
            "--expires-in",
            "30d",
            cwd=elsewhere,
            **where,
        )
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip().splitlines()[-1]
        with make_session_factory(engine)() as s:
            key = authenticate(session=s, token=token)
            assert key is not None and key.scopes == ["predict"] and key.expires_at is not None
    listed = flame("keys", "list", cwd=elsewhere, home=home)
    assert listed.returncode == 0 and listed.stdout.count(" active ") == 2
    prefix = listed.stdout.strip().splitlines()[-1].split()[1]
    revoked = flame("keys", "revoke", prefix, cwd=elsewhere, home=home)
    assert revoked.returncode == 0 and "revoked key" in revoked.stdout
    assert flame("keys", "list", cwd=elsewhere, home=home).stdout.count(" active ") == 1
    engine.dispose()
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "unused").exists()


COMMANDS = [
    ("keys", "create", "--name", "x", "--scope", "admin"),
    ("keys", "list"),
    ("keys", "revoke", "abcdef12"),
    ("models", "list"),
    ("models", "show", "v1"),
    ("models", "activate", "v1"),
    ("models", "register", "."),
]


def one_line_error(r: subprocess.CompletedProcess[str], words: str) -> None:
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ") and words in r.stderr, (
        r.stderr
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_no_registry_is_one_line_and_creates_nothing(tmp_path, args):
    home, elsewhere = tmp_path / "none", tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = flame(*args, cwd=elsewhere, home=home)
    one_line_error(r, f"no FLAME registry at sqlite:///{home}/registry.db; run 'flame bootstrap'")
    assert not home.exists() and list(elsewhere.iterdir()) == []


def test_an_unmigrated_or_outdated_registry_is_one_line_too(tmp_path, fresh_database):
    for url in (fresh_database, f"sqlite:///{tmp_path / 'empty.db'}"):
        if url.startswith("sqlite"):
            create_engine(url).connect().close()  # an empty file, as the old `flame keys create` left
        one_line_error(
            flame("keys", "list", cwd=tmp_path, database_url=url), "is not migrated; run 'flame bootstrap'"
        )
        engine = create_engine(url)
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []  # still nothing created
        engine.dispose()
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0001")
    one_line_error(
        flame("keys", "list", cwd=tmp_path, database_url=url), "is at revision ['0001'], this code needs"
    )
