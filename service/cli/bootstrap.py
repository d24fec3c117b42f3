"""`flame bootstrap`: make a registry serve from its first start, idempotently.

It migrates the registry (`alembic upgrade head`), registers a model when no version is `active`
(a checkpoint directory given by `--model-dir` or `FLAME_BOOTSTRAP_MODEL_DIR`, else the demo model)
and mints the first admin key when no key was ever created, on SQLite or PostgreSQL. Run twice, the
second run changes nothing. `flame serve` runs it on the embedded (SQLite) registry; compose runs it
as a one-shot service before the API starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.registry import fail, run_migrations

if TYPE_CHECKING:
    from service.settings import Settings


def bootstrap(
    settings: Settings,
    *,
    demo: bool = False,
    model_dir: Path | None = None,
    n: int | None = None,
    epochs: int | None = None,
) -> tuple[str | None, str | None]:
    """Migrate; register `model_dir` (default: settings.bootstrap_model_dir; `demo` forces the demo
    model) if nothing is active; mint an admin key if there is no key at all.
    Returns (version registered or None, admin token or None)."""
    from service.artifact_stores import open_store
    from service.auth.service import any_api_key, create_api_key
    from service.cli.serve import (
        DEMO_EPOCHS,
        DEMO_N,
        build_demo_model,
        demo_cards,
        demo_validation,
        register_model,
    )
    from service.db import make_engine, make_session_factory, session_scope
    from service.registry.checkpoints import checkpoint_dir, register_checkpoint
    from service.registry.models import Alias

    model_dir = None if demo else (model_dir or settings.bootstrap_model_dir)
    if model_dir is not None:
        checkpoint_dir(model_dir)  # a wrong path fails before anything is created
    store = open_store(settings)  # an unusable bucket stops here, before the registry is touched
    run_migrations(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    registered = token = None
    try:
        with factory() as session:
            active = session.get(Alias, "active")
            active_id = active.version_id if active is not None else None
        if active_id is not None:
            if model_dir is not None:
                typer.echo(
                    f"{active_id} is already active: {model_dir} not registered (see 'flame models register')"
                )
        elif model_dir is not None:
            with session_scope(factory) as session:
                done = register_checkpoint(
                    session=session,
                    store=store,
                    directory=model_dir,
                    moved_by="flame bootstrap",
                    rank_budget=settings.capacity_rank_budget,
                )
            registered = done.version.id
            typer.echo(f"registered {model_dir} as {registered} and made it active")
            for warning in done.warnings:
                typer.echo(f"warning: {warning}")
        else:
            n, epochs = n or DEMO_N, DEMO_EPOCHS if epochs is None else epochs
            typer.echo(f"no active model: training the demo model (synthetic-icu, n={n}, {epochs} epochs)...")
            cl, metrics = build_demo_model(n=n, epochs=epochs)
            version = register_model(
                session_factory=factory,
                store=store,
                cl=cl,
                metrics=metrics,
                note="demo model (synthetic-icu)",
                canary_samples=demo_validation(n=n),
                cards=demo_cards(cl, n=n),
            )
            registered = version.id
            typer.echo(f"registered demo model {version.id} and made it active")
        if settings.auth_enabled:
            with session_scope(factory) as session:
                if not any_api_key(session=session):
                    _, token = create_api_key(session=session, name="bootstrap-admin", scopes=["admin"])
    finally:
        engine.dispose()
    return registered, token


def bootstrap_command(
    demo: Annotated[bool, typer.Option("--demo", help="register the demo model (the default)")] = False,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="a directory written by `flame train` or `flame continual` (or DIR/model)"),
    ] = None,
) -> None:
    """Migrate the registry, register a model if none is active and mint the first admin key;
    running it again changes nothing. Default model: FLAME_BOOTSTRAP_MODEL_DIR, else the demo."""
    from flame_core.verify import CheckpointInvalid
    from service.artifact_stores import StoreUnavailable
    from service.cli.serve import TOKEN_FILE, show_token_once
    from service.registry.errors import DomainError
    from service.settings import get_settings

    if demo and model_dir is not None:
        raise fail("give --demo or --model-dir, not both")
    settings = get_settings()
    try:
        registered, token = bootstrap(settings, demo=demo, model_dir=model_dir)
    except (CheckpointInvalid, DomainError, StoreUnavailable) as e:
        raise fail(str(e)) from None
    if token is not None:
        show_token_once(token, settings.home / TOKEN_FILE)
    if registered is None and token is None:
        keys = ", and a key exists" if settings.auth_enabled else ""
        typer.echo(f"nothing to do: the registry is migrated, a model is active{keys}")
