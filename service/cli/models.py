"""`flame models register|list|show|activate`: the model registry from the command line.

`register` is `POST /models` for a directory on this machine; `list`, `show` and `activate` answer
as `GET /models`, `GET /models/{version}` and `POST /models/{version}/activate` do.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from service.cli.registry import fail, open_registry

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Model versions: register, list, activate."
)


def _caller() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (KeyError, OSError):  # a container user with no passwd entry
        return "cli"


@app.command("register")
def register(
    run_dir: Annotated[
        Path, typer.Argument(help="`flame train --out` DIR, or `flame continual` DIR or DIR/model")
    ],
    activate: Annotated[bool, typer.Option("--activate/--no-activate", help="move `active` to it")] = True,
    note: Annotated[str, typer.Option(help="a note stored with the version")] = "",
) -> None:
    """Verify a checkpoint (config.json + model.safetensors) and register it as a root version."""
    from flame_core.verify import CheckpointInvalid
    from service.artifact_stores import StoreUnavailable, open_store
    from service.db import session_scope
    from service.registry.checkpoints import register_checkpoint
    from service.registry.errors import DomainError
    from service.settings import get_settings

    settings = get_settings()
    engine, factory = open_registry(settings)  # no registry: one line, and nothing created
    try:
        store = open_store(settings)
        with session_scope(factory) as session:
            done = register_checkpoint(
                session=session,
                store=store,
                directory=run_dir,
                moved_by=_caller(),
                activate=activate,
                note=note,
                rank_budget=settings.capacity_rank_budget,
            )
    except (CheckpointInvalid, DomainError, StoreUnavailable) as e:
        raise fail(str(e)) from None
    finally:
        engine.dispose()
    v = done.version
    typer.echo(
        f"registered {run_dir} as {v.id} (digest {v.digest[:12]})" + (", now active" if activate else "")
    )
    for warning in done.warnings:
        typer.echo(f"warning: {warning}")


@app.command("list")
def list_models() -> None:
    """Every version, oldest first, with its aliases and the tasks it introduced."""
    from flame_core.report import text_table
    from service.registry.service import list_versions_out
    from service.settings import get_settings

    engine, factory = open_registry(get_settings())
    try:
        with factory() as session:
            rows = [
                [v["version"], v["parent"] or "-", v["status"], ",".join(v["aliases"]) or "-",
                 ",".join(v["tasks_introduced"]), v["created_at"].strftime("%Y-%m-%d %H:%M"), v["note"][:40]]
                for v in list_versions_out(session=session)
            ]  # fmt: skip
    finally:
        engine.dispose()
    typer.echo(text_table(["version", "parent", "status", "aliases", "tasks", "created", "note"], rows))


@app.command("show")
def show(version: Annotated[str, typer.Argument(help="a version id, e.g. v2")]) -> None:
    """One version as JSON: lineage, tasks, files with their sha256, reserved rank."""
    from service.registry.errors import DomainError
    from service.registry.service import version_detail
    from service.settings import get_settings

    engine, factory = open_registry(get_settings())
    try:
        with factory() as session:
            detail = version_detail(session=session, version=version)
    except DomainError as e:
        raise fail(e.message) from None
    finally:
        engine.dispose()
    typer.echo(json.dumps(detail, indent=2, default=str))


@app.command("activate")
def activate(
    version: Annotated[str, typer.Argument(help="the version `active` should point at")],
    reason: Annotated[str, typer.Option(help="recorded in the alias history")] = "activate",
) -> None:
    """Move `active` to VERSION (rollback or roll-forward); the move is recorded with who and why."""
    from service.db import session_scope
    from service.registry.errors import DomainError
    from service.registry.service import activate as move
    from service.settings import get_settings

    engine, factory = open_registry(get_settings())
    try:
        with session_scope(factory) as session:
            out = move(session=session, version=version, alias="active", moved_by=_caller(), reason=reason)
    except DomainError as e:
        raise fail(e.message) from None
    finally:
        engine.dispose()
    typer.echo(f"active: {out['previous'] or '(none)'} -> {out['version']}")
