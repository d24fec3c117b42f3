"""Alembic environment: the URL comes from `-x url=...` or the service settings, never from alembic.ini;
so do the logs (the service's JSON lines, service/logs.py, at FLAME_LOG_LEVEL), not alembic.ini's formats."""

from __future__ import annotations

from alembic import context

from service.db import load_models, make_engine
from service.logs import configure_logging
from service.settings import get_settings


def _log_level() -> str:
    try:
        return get_settings().log_level
    except ValueError:  # a bad FLAME_* setting is reported where it matters (the URL, the service)
        return "INFO"


configure_logging(_log_level())
target_metadata = load_models()


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or get_settings().database_url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) for a DBA to review."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_database_url())
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
