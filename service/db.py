"""Database plumbing: engines and sessions, and `load_models` for Alembic and tests.

The ORM modules (`service.<area>.models`) share `service.orm.Base` and import nothing from here;
`load_models` imports them when it is called, so no import cycle joins this module and them.
Schema changes go through Alembic; `create_all` is for tests only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.orm import Base

# What a lost database looks like (connection refused or dropped, SQLite unable to open or locked past
# its busy timeout): the API answers 503 database_unavailable, the key cache and audit writer ride it out.
DB_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

# An execution option that makes SQLite begin the transaction as a writer (see `write_session`).
_SQLITE_BEGIN = "sqlite_begin"


def load_models() -> MetaData:
    """Import every ORM module so `Base.metadata` knows all tables (Alembic, tests)."""
    import service.auth.models  # noqa: F401
    import service.datasets.models  # noqa: F401
    import service.inference.models  # noqa: F401
    import service.jobs.models  # noqa: F401
    import service.registry.models  # noqa: F401

    return Base.metadata


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT and transactional DDL; take it over
    # (the recipe from SQLAlchemy's SQLite dialect docs) and turn on foreign keys and WAL. A write
    # unit of work begins IMMEDIATE: it waits (busy_timeout) for the write lock at BEGIN instead of
    # reading first and failing with "database is locked" when it then tries to write.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_SQLITE_BEGIN) == "IMMEDIATE"
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; for a SQLite file its parent directory is created on first use."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: rows returned by a service call stay readable after its commit.
    return sessionmaker(bind=engine, expire_on_commit=False)


def write_session(factory: sessionmaker[Session]) -> Session:
    """A session for a unit of work that writes: on SQLite its transactions BEGIN IMMEDIATE, so
    concurrent writers queue for the lock instead of failing; on PostgreSQL an ordinary session."""
    bind = factory.kw.get("bind")
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        return factory(bind=bind.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"}))
    return factory()


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process (default: the settings' URL), for the worker and the CLI."""
    if url is None:
        from service.settings import get_settings

        url = get_settings().database_url
    return make_engine(url)


@contextmanager
def session_scope(factory: sessionmaker[Session] | None = None, *, write: bool = True) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any exception, always close.

    Service functions only flush; the caller decides what commits together (e.g. registering a
    version and marking its job succeeded in one transaction). `write=False` for read-only work.
    """
    factory = factory or make_session_factory(get_engine())
    session = write_session(factory) if write else factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
