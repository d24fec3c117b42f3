"""Where the registry is, whether it is usable, and migrating it: shared by every `flame` command.

Every command reads the same settings (`FLAME_HOME`, or `FLAME_DATABASE_URL` and
`FLAME_ARTIFACT_ROOT`), whatever the current folder. Only `flame bootstrap` and `flame serve` create
or migrate a registry; every other command that needs one checks it first and, if it is missing,
unreachable or not migrated to this code's head, prints one line and exits with code 2, creating
nothing (no empty SQLite file, no directory).
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from service.settings import Settings

# A source checkout (or an editable install) has alembic.ini beside the packages; an installed
# wheel does not, and the images run from the folder they copied it to (WORKDIR /app).
ROOT = Path(__file__).resolve().parents[2]
HINT = "run 'flame bootstrap' (or set FLAME_HOME / FLAME_DATABASE_URL)"


def fail(message: str) -> typer.Exit:
    """One line on stderr and exit code 2: `raise fail(...)`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def shown(url: str) -> str:
    """The URL as it may be printed: never its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    for root in (ROOT, Path.cwd()):
        if (root / "alembic.ini").is_file() and (root / "migrations").is_dir():
            break
    else:
        raise fail(f"no alembic.ini and migrations/ in {ROOT} or {Path.cwd()}: run from the repository")
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.cmd_opts = Namespace(x=[f"url={database_url}"])  # env.py reads `-x url=...`
    return cfg


def run_migrations(database_url: str) -> None:
    """`alembic upgrade head` against `database_url` (idempotent; creates a SQLite file's folder)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def registry_problem(database_url: str) -> str | None:
    """Why `database_url` is no usable registry (missing, unreachable, unmigrated, behind), or None.
    Creates nothing: a SQLite file is only opened if it exists."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.engine import make_url

    from service.db import DB_UNAVAILABLE

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return f"no FLAME registry at {shown(database_url)}; {HINT}"
    engine = create_engine(url)  # not service.db.make_engine: that creates a SQLite file's folder
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return f"the FLAME registry at {shown(database_url)} is not migrated; {HINT}"
            current = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except DB_UNAVAILABLE as e:
        reason = str(e.orig if hasattr(e, "orig") else e).strip().splitlines()[0][:200]
        return f"cannot reach the FLAME registry at {shown(database_url)} ({reason})"
    finally:
        engine.dispose()
    head = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    if current != head:
        return (
            f"the FLAME registry at {shown(database_url)} is at revision {sorted(current) or 'none'}, "
            f"this code needs {sorted(head)}; {HINT}"
        )
    return None


def open_registry(settings: Settings) -> tuple[Engine, sessionmaker[Session]]:
    """An engine and session factory on the configured registry, after checking it (see above)."""
    from service.db import make_engine, make_session_factory

    problem = registry_problem(settings.database_url)
    if problem is not None:
        raise fail(problem)
    engine = make_engine(settings.database_url)
    return engine, make_session_factory(engine)
