"""`flame keys create|list|revoke`: API keys on the configured registry (tokens shown once).

`revoke` takes effect at once for every process that has not cached the key, and within
FLAME_AUTH_CACHE_TTL_S for API replicas that have (`DELETE /keys/{id}` also clears the cache of the
replica that answers it).
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.registry import fail, open_registry

app = typer.Typer(no_args_is_help=True, add_completion=False, help="API keys (tokens shown once).")


def _when(value) -> str:  # type: ignore[no-untyped-def]
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "never"


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    scope: Annotated[list[str], typer.Option(help="predict, stat, train or admin; repeat for several")],
    expires_in: Annotated[
        str | None, typer.Option(help="lifetime, e.g. 30d, 12h, 2w (units s, m, h, d, w); default: never")
    ] = None,
) -> None:
    """Create an API key and print its token once (only a hash is stored)."""
    from service.auth.service import create_api_key, parse_duration
    from service.db import session_scope
    from service.orm import utcnow
    from service.settings import get_settings

    try:
        expires_at = utcnow() + parse_duration(expires_in) if expires_in is not None else None
    except ValueError as e:
        raise fail(f"--expires-in: {e}") from None
    engine, factory = open_registry(get_settings())
    try:
        with session_scope(factory) as session:
            key, token = create_api_key(session=session, name=name, scopes=scope, expires_at=expires_at)
    except ValueError as e:
        raise fail(str(e)) from None
    finally:
        engine.dispose()
    typer.echo(
        f"key {key.id} ({key.name}, scopes {key.scopes}, expires {_when(key.expires_at)}); token, shown once:"
    )
    typer.echo(token)


@app.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
) -> None:
    """Keys, oldest first: id, prefix (the 8 characters after `flm_`), state, scopes and expiry."""
    from flame_core.report import text_table
    from service.auth.service import key_state, list_api_keys
    from service.settings import get_settings

    engine, factory = open_registry(get_settings())
    try:
        with factory() as session:
            keys = list_api_keys(session=session, include_revoked=all_keys)
            rows = [
                [k.id, k.prefix, k.name, key_state(k), ",".join(k.scopes), _when(k.expires_at)] for k in keys
            ]
    finally:
        engine.dispose()
    typer.echo(text_table(["id", "prefix", "name", "state", "scopes", "expires"], rows))


@app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="the key's id or prefix (see `flame keys list`)")],
) -> None:
    """Revoke a key for good."""
    from service.auth.service import revoke_api_key
    from service.db import session_scope
    from service.registry.errors import ApiKeyNotFound
    from service.settings import get_settings

    engine, factory = open_registry(get_settings())
    try:
        with session_scope(factory) as session:
            row = revoke_api_key(session=session, key_id=key)
    except ApiKeyNotFound as e:
        raise fail(e.message) from None
    finally:
        engine.dispose()
    typer.echo(f"revoked key {row.id} ({row.name}) at {_when(row.revoked_at)}")
