"""`flame serve`: run the API; and the demo model `flame bootstrap` registers.

On the embedded defaults (SQLite), `serve` makes one machine a working service with no other step:
it runs `flame bootstrap` (migrations; a small demo model as v1, multitask FLAME pretrained on
synthetic-icu in well under two minutes on two CPU cores, or FLAME_BOOTSTRAP_MODEL_DIR, when no
version is `active`; a one-time admin key). With PostgreSQL (compose), `flame bootstrap` runs as
its own one-shot service before the API starts.
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

DEMO_N, DEMO_EPOCHS = 600, 4
DEMO_HELD_OUT = ("readmission",)
TOKEN_FILE = "bootstrap-admin.token"  # in FLAME_HOME, when stdout is not a terminal
# uvicorn's own access log prints raw request lines (paths, query strings): ours logs the route
# template, status and latency instead (service.observability). `log_config=None`: uvicorn installs
# no handlers or formats of its own; its lines reach the JSON handler of service.logs.
UVICORN_OPTIONS: dict[str, Any] = {"access_log": False, "log_config": None}
# uvicorn's supervisor pings each `--workers` process every 0.5 s and SIGKILLs one that does not answer
# within this many seconds (its default, 5, killed a worker busy on a loaded 2-core CI host, and the
# requests it held hung): a busy worker is not a hung one.
WORKER_HEALTHCHECK_S = 60


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
    from flame_core.task_stats import record_task_statistics
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
    record_task_statistics(cl, data.splits["train"], data.splits["val"], list(specs.tasks))
    return cl, metrics


def demo_validation(*, n: int = DEMO_N, seed: int = 0) -> list[dict]:
    """The demo model's validation split (the generator is deterministic): its tasks' canaries."""
    from flame_core.benchmarks import load_benchmark

    return list(load_benchmark("synthetic-icu", n=n, seed=seed).splits["val"])


def demo_cards(cl: ContinualFlame, *, n: int = DEMO_N, seed: int = 0) -> dict[str, dict]:
    """The demo model's task cards: synthetic-icu's training split, scored on its test split."""
    from flame_core.benchmarks import load_benchmark
    from flame_core.card import task_card

    data = load_benchmark("synthetic-icu", n=n, seed=seed)
    source = {"generator": f"flame_core.benchmarks.synthetic_icu (n={n}, seed={seed})"}
    return {
        t: {
            **task_card(cl, t, train=data.splits["train"], test=data.splits["test"]),
            "evaluated_on": "test",
            "sources": source,
        }
        for t in cl.cursor
    }


def register_model(
    *,
    session_factory,  # type: ignore[no-untyped-def]
    store: ArtifactStore,
    cl: ContinualFlame,
    metrics: dict[str, dict[str, float]] | None = None,
    moved_by: str = "flame serve",
    note: str = "",
    canary_samples: Sequence[dict] | None = None,
    cards: dict[str, dict] | None = None,
) -> ModelVersion:
    """Register `cl` (one stage) as a root version and move `active` to it. With `canary_samples`
    (validation data) every task stores its canaries for the promotion gate; without, none."""
    from service.db import session_scope
    from service.jobs.canaries import load_as_host, with_canaries
    from service.registry.versions import register_version
    from service.versioning import stage_records, version_files

    components, tasks, modalities = stage_records(cl, 0, metrics, cards)
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


def serve_command(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    bootstrap_demo: Annotated[
        bool | None,
        typer.Option("--bootstrap/--no-bootstrap", help="run `flame bootstrap` first (default: on SQLite)"),
    ] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Run the HTTP API (uvicorn) on the configured database, artifact store and device."""
    import uvicorn

    from flame_core.verify import CheckpointInvalid
    from service.artifact_stores import StoreUnavailable, open_store
    from service.cli.bootstrap import bootstrap
    from service.cli.registry import fail
    from service.logs import configure_logging
    from service.observability import prepare_multiprocess_dir
    from service.registry.errors import DomainError
    from service.settings import get_settings

    settings = get_settings()
    try:
        open_store(settings)  # the api would refuse to start: say why in one line, not a traceback
    except StoreUnavailable as e:
        raise fail(str(e)) from None
    if bootstrap_demo is None:
        bootstrap_demo = settings.database_url.startswith("sqlite")
    if bootstrap_demo:
        try:
            _, token = bootstrap(settings)
        except (CheckpointInvalid, DomainError, StoreUnavailable) as e:
            raise fail(str(e)) from None
        if token is not None:
            show_token_once(token, settings.home / TOKEN_FILE)
    configure_logging(settings.log_level)  # this process's lines too (with --workers N, the supervisor's)
    if workers > 1:
        # every worker writes its metrics to files here; /metrics in any worker sums them all
        prepare_multiprocess_dir(settings.home / f"metrics-{port}")
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            **UVICORN_OPTIONS,
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
