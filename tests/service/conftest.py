"""Fixtures for service tests: the real PostgreSQL (a fresh schema per test session) and SQLite.

PostgreSQL comes from FLAME_TEST_DATABASE_URL (default: database `test` on 127.0.0.1:5432 as user
postgres). If it cannot be reached the tests FAIL: a registry tested on SQLite alone is not tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.artifacts import LocalArtifactStore
from service.db import load_models, make_engine, make_session_factory
from service.settings import Settings

PG_URL = os.environ.get("FLAME_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Redis databases the tests own (brokers and result backends of the Celery tests); emptied when the
# session ends so no test leaves keys behind. Override with FLAME_TEST_REDIS_DBS="11,12".
TEST_REDIS_DBS = [int(d) for d in os.environ.get("FLAME_TEST_REDIS_DBS", "11,12,13,14,15").split(",") if d]


@pytest.fixture(scope="session", autouse=True)
def _empty_test_redis_dbs() -> Iterator[None]:
    yield
    import redis

    for db in TEST_REDIS_DBS:
        client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_connect_timeout=2)
        try:
            client.flushdb()
        except redis.exceptions.ConnectionError:
            pass  # no Redis: the tests that need it have already failed and said so
        finally:
            client.close()


def _admin_engine() -> Engine:
    engine = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure to connect means the same thing here
        engine.dispose()
        pytest.fail(
            f"PostgreSQL is required for the service tests and is not reachable at {PG_URL} ({e}). "
            "Start it, or point FLAME_TEST_DATABASE_URL at a database this user may create "
            "schemas and databases in.",
            pytrace=False,
        )
    return engine


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An autocommit engine on the test database, for CREATE SCHEMA / CREATE DATABASE."""
    engine = _admin_engine()
    yield engine
    engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Tables created from the models on each backend; PostgreSQL gets its own throwaway schema."""
    metadata = load_models()
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'registry.db'}")
        metadata.create_all(eng)
        yield eng
        eng.dispose()
        return
    admin = request.getfixturevalue("pg_admin")
    schema = f"flame_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        metadata.create_all(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def scratch_pg(pg_admin: Engine) -> Iterator[tuple[str, Engine]]:
    """A throwaway PostgreSQL database with the models' tables, for processes that get only a URL
    (Celery workers, whole apps); yields (url, engine)."""
    name = f"flame_scratch_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    load_models().create_all(engine)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def session_factory(engine: Engine):  # type: ignore[no-untyped-def]
    """A session factory on clean tables: every row is deleted after the test."""
    yield make_session_factory(engine)
    with engine.begin() as conn:
        for table in reversed(load_models().sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def session(session_factory) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        yield s


@pytest.fixture
def store(tmp_path) -> LocalArtifactStore:  # type: ignore[no-untyped-def]
    return LocalArtifactStore(tmp_path / "artifacts")


def start_celery_worker(
    *,
    redis_url: str,
    database_url: str,
    artifact_root: str,
    extra_env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """A real Celery worker process (solo pool) that, as in deployment, gets only the environment
    (`extra_env` adds FLAME_* settings, e.g. a short heartbeat timeout)."""
    env = {
        **os.environ,
        "FLAME_REDIS_URL": redis_url,
        "FLAME_DATABASE_URL": database_url,
        "FLAME_ARTIFACT_ROOT": artifact_root,
        "FLAME_DEVICE": "cpu",
        "OMP_WAIT_POLICY": "PASSIVE",
        "FLAME_WORKER_METRICS_PORT": "0",  # no fixed port shared by tests; extra_env may ask for one
        **(extra_env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "service.jobs.celery_app",
        "worker",
        "--pool",
        "solo",
        "-c",
        "1",
        "--loglevel",
        "INFO",
        "-n",
        f"test-{uuid.uuid4().hex[:6]}@%h",
    ]
    return subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], env=env, **popen)


@pytest.fixture
def fresh_database(pg_admin: Engine) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (as compose's first start sees it), dropped after."""
    from sqlalchemy.engine import make_url

    name = f"flame_fresh_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_admin.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory written by `flame train` (tiny model, 1 epoch, synthetic-icu n=200): what a team
    that trained FLAME itself brings to the registry."""
    from typer.testing import CliRunner

    from service.cli import app

    out = tmp_path_factory.mktemp("byom") / "run"
    args = ["train", "--benchmark", "synthetic-icu", "--n", "200", "--epochs", "1", "--device", "cpu"]
    args += ["--d-model", "16", "--n-experts", "2", "--top-k", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def serving_registry(root: Path, cl: Any, **settings: Any) -> tuple[Settings, Engine, Any]:
    """A SQLite registry under `root` with `cl` registered as v1 (active): the app's settings (CPU),
    the engine (dispose it) and the session factory."""
    from service.cli.serve import register_model

    config = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}", artifact_root=root / "a", device="cpu", **settings
    )
    engine = make_engine(config.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    register_model(session_factory=factory, store=LocalArtifactStore(config.artifact_root), cl=cl)
    return config, engine, factory
