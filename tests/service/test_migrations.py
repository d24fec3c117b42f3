"""Alembic: `upgrade head` builds exactly the models' schema and `downgrade base` removes it, on a
fresh SQLite file and on a scratch PostgreSQL database.

Alembic runs in a subprocess through its command-line entry point with the repository's
alembic.ini, as in the containers; one process does upgrade, check and downgrade to keep it fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.db import load_models

ROOT = Path(__file__).resolve().parents[2]
HEAD = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()

SCRIPT = r"""
import json, sys
from alembic.config import main
from sqlalchemy import inspect, text
from service.db import make_engine

url, x = sys.argv[1], sys.argv[2:]

def state():
    engine = make_engine(url)
    with engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        fks = sorted(fk["name"] for fk in inspect(conn).get_foreign_keys("jobs")) if "jobs" in tables else []
        checks = inspect(conn).get_check_constraints("model_versions") if "model_versions" in tables else []
    engine.dispose()
    statuses = {c["name"]: "'candidate'" in c["sqltext"] for c in checks}
    return {"tables": tables, "head": head, "job_fks": fks, "status_checks": statuses}

main(argv=[*x, "upgrade", "head"])
up = state()
main(argv=[*x, "check"])  # exits non-zero if the models and the migrations disagree
main(argv=[*x, "downgrade", "base"])
print(json.dumps({"up": up, "down": state()}))
"""


def _migrate(url: str, *, via_env: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FLAME_DATABASE_URL"}
    if via_env:  # as in the containers
        env["FLAME_DATABASE_URL"] = url
    x = [] if via_env else ["-x", f"url={url}"]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, *x],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"alembic failed on {url}:\n{proc.stdout}\n{proc.stderr}"
    assert (
        "Running upgrade  -> 0001" in proc.stderr
        and "Running upgrade 0001 -> 0002" in proc.stderr
        and "Running upgrade 0002 -> 0003" in proc.stderr
        and "Running upgrade 0003 -> 0004" in proc.stderr
    )
    assert "Running downgrade 0004 -> 0003" in proc.stderr and "Running downgrade 0003 -> 0002" in proc.stderr
    assert "Running downgrade 0002 -> 0001" in proc.stderr
    assert "Running downgrade 0001 -> " in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_round_trip(result: dict) -> None:
    assert result["up"]["tables"] == sorted(set(load_models().tables) | {"alembic_version"})
    assert HEAD is not None and HEAD != "0001"  # one head, past the initial schema
    assert result["up"]["head"] == [HEAD]
    assert result["up"]["job_fks"] == [
        "fk_jobs_parent_version_model_versions",
        "fk_jobs_result_version_model_versions",
    ]  # the naming convention
    assert result["up"]["status_checks"] == {"ck_model_versions_status": True}  # 0003: candidate versions
    assert result["down"] == {"tables": ["alembic_version"], "head": [], "job_fks": [], "status_checks": {}}


def test_upgrade_and_downgrade_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'registry.db'}"  # the parent directory does not exist yet
    _assert_round_trip(_migrate(url, via_env=True))


def test_upgrade_and_downgrade_on_postgresql(pg_admin):
    name = f"flame_migrations_test_{uuid.uuid4().hex[:8]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_admin.url).set(database=name).render_as_string(hide_password=False)
    try:
        _assert_round_trip(_migrate(url, via_env=False))
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
