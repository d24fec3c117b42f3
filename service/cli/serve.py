"""`flame serve` and `flame keys create`: run the API, and mint API keys.

On the embedded defaults (SQLite), `serve` makes one machine a working service with no other step:
it runs the migrations, registers a small demo model as v1 (multitask FLAME pretrained on
synthetic-icu, well under two minutes on two CPU cores) when no version is `active`, and prints a
one-time admin key. With PostgreSQL (compose), migrations and models are someone else's job.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from flame_core.config import FlameConfig
    from flame_core.continual import ContinualFlame
    from service.artifacts import ArtifactStore
    from service.registry.models import ModelVersion
    from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEMO_N, DEMO_EPOCHS = 600, 4
DEMO_HELD_OUT = ("readmission",)
TOKEN_FILE = "bootstrap-admin.token"  # beside the artifact root, when stdout is not a terminal
# uvicorn's own access log prints raw request lines (paths, query strings): ours logs the route
# template, status and latency instead (service.observability).
UVICORN_OPTIONS: dict[str, Any] = {"access_log": False}


def run_migrations(database_url: str) -> None:
    """`alembic upgrade head` against `database_url` (idempotent)."""
    from argparse import Namespace

    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.cmd_opts = Namespace(x=[f"url={database_url}"])  # env.py reads `-x url=...`
    command.upgrade(cfg, "head")


def build_demo_model(
    *, n: int = DEMO_N, epochs: int = DEMO_EPOCHS, config: FlameConfig | None = None, seed: int = 0
) -> tuple[ContinualFlame, dict[str, dict[str, float]]]:
    """A multitask FLAME on synthetic-icu wrapped as stage 0 of a ContinualFlame, with its val
    metrics; `epochs=0` gives an untrained (random) model for tests."""
    from flame_core.benchmarks import load_benchmark
    from flame_core.config import FlameConfig
    from flame_core.continual import ContinualFlame
    from flame_core.model import build_flame
    from flame_core.ranges import record_training_ranges
    from flame_core.training import TrainConfig, fit, seed_everything

    data = load_benchmark("synthetic-icu", n=n, seed=seed)
    config = config or FlameConfig(
        d_model=32, n_experts=4, expert_hidden=64, ts_ref_points=8, text_buckets=1024
    )
    # `readmission` is left out on purpose: the README teaches it to the running service (POST /tasks).
    specs = data.specs.subset([t for t in data.specs.tasks if t not in DEMO_HELD_OUT])
    if epochs <= 0:
        seed_everything(seed)
        model, metrics = build_flame(config, specs), {}
    else:
        train_config = TrainConfig(epochs=epochs, seed=seed, device="cpu", progress=False)
        model, result = fit(
            specs,
            data.splits["train"],
            data.splits["val"],
            model_config=config,
            train_config=train_config,
        )
        metrics = result.val_metrics
    cl = ContinualFlame(model.cpu().eval())
    record_training_ranges(cl.training_ranges, data.splits["train"], specs, list(specs.tasks))
    return cl, metrics


def demo_validation(*, n: int = DEMO_N, seed: int = 0) -> list[dict]:
    """The demo model's validation split (the generator is deterministic): its tasks' canaries."""
    from flame_core.benchmarks import load_benchmark

    return list(load_benchmark("synthetic-icu", n=n, seed=seed).splits["val"])


def register_model(
    *,
    session_factory,  # type: ignore[no-untyped-def]
    store: ArtifactStore,
    cl: ContinualFlame,
    metrics: dict[str, dict[str, float]] | None = None,
    moved_by: str = "flame serve",
    note: str = "",
    canary_samples: Sequence[dict] | None = None,
) -> ModelVersion:
    """Register `cl` (one stage) as a root version and move `active` to it. With `canary_samples`
    (validation data) every task stores its canaries for the promotion gate; without, none."""
    from service.db import session_scope
    from service.jobs.canaries import load_as_host, with_canaries
    from service.registry.versions import register_version
    from service.versioning import stage_records, version_files

    components, tasks, modalities = stage_records(cl, 0, metrics)
    files = version_files(cl)
    if canary_samples is not None:
        tasks = with_canaries(load_as_host(store, files), store, tasks, canary_samples)
    with session_scope(session_factory) as session:
        return register_version(
            session=session,
            store=store,
            parent=None,
            files=files,
            moved_by=moved_by,
            components=components,
            tasks=tasks,
            modalities=modalities,
            reason="bootstrap",
            note=note,
        )


def bootstrap(
    settings: Settings, *, n: int = DEMO_N, epochs: int = DEMO_EPOCHS
) -> tuple[str | None, str | None]:
    """Migrate, register the demo model if nothing is active, mint an admin key if none exists.
    Returns (version registered or None, admin token or None)."""
    from service.artifacts import LocalArtifactStore
    from service.auth.service import create_api_key, list_api_keys
    from service.db import make_engine, make_session_factory, session_scope
    from service.registry.models import Alias

    run_migrations(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    registered = token = None
    try:
        with factory() as session:
            has_active = session.get(Alias, "active") is not None
        if not has_active:
            typer.echo(f"no active model: training the demo model (synthetic-icu, n={n}, {epochs} epochs)...")
            cl, metrics = build_demo_model(n=n, epochs=epochs)
            store = LocalArtifactStore(settings.artifact_root)
            version = register_model(
                session_factory=factory,
                store=store,
                cl=cl,
                metrics=metrics,
                note="demo model (synthetic-icu)",
                canary_samples=demo_validation(n=n),
            )
            registered = version.id
            typer.echo(f"registered demo model {version.id} and made it active")
        if settings.auth_enabled:
            with session_scope(factory) as session:
                if not list_api_keys(session=session):
                    _, token = create_api_key(session=session, name="bootstrap-admin", scopes=["admin"])
    finally:
        engine.dispose()
    return registered, token


def serve_command(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    bootstrap_demo: Annotated[
        bool | None,
        typer.Option(
            "--bootstrap/--no-bootstrap", help="migrate + demo model + admin key (default: on SQLite)"
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Run the HTTP API (uvicorn) on the configured database, artifact root and device."""
    import uvicorn

    from service.settings import get_settings

    settings = get_settings()
    if bootstrap_demo is None:
        bootstrap_demo = settings.database_url.startswith("sqlite")
    if bootstrap_demo:
        _, token = bootstrap(settings)
        if token is not None:
            show_token_once(token, settings.artifact_root.parent / TOKEN_FILE)
    if workers > 1:
        uvicorn.run(
            "service.app:create_app", factory=True, host=host, port=port, workers=workers, **UVICORN_OPTIONS
        )
    else:
        from service.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, **UVICORN_OPTIONS)


def show_token_once(token: str, file: Path) -> None:
    """The bootstrap admin token on the terminal, never in a log: when stdout is not a terminal (a
    supervisor or container collecting logs), it goes to `file` (mode 0600) and only the path is
    printed."""
    if sys.stdout.isatty():
        typer.secho("created an admin API key (shown once, store it now):", fg=typer.colors.YELLOW)
        typer.echo(f"  {token}")
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    typer.echo(f"created an admin API key; its token is in {file} (mode 0600): read it, then delete the file")


keys_app = typer.Typer(no_args_is_help=True, add_completion=False, help="API keys (tokens shown once).")


@keys_app.callback()
def keys_group() -> None:
    """Create API keys (more subcommands may follow); a callback keeps `keys` a command group."""


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    scope: Annotated[list[str], typer.Option(help="predict, train or admin; repeat for several")],
) -> None:
    """Create an API key and print its token once (only a hash is stored)."""
    from service.auth.service import create_api_key
    from service.db import get_engine, make_session_factory, session_scope

    try:
        with session_scope(make_session_factory(get_engine())) as session:
            key, token = create_api_key(session=session, name=name, scopes=scope)
    except ValueError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"key {key.id} ({key.name}, scopes {key.scopes}); token, shown once:")
    typer.echo(token)
