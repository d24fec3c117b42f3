"""`flame worker`: a Celery worker that runs training stages (one at a time)."""

from __future__ import annotations

from typing import Annotated

import typer


def worker_command(
    concurrency: Annotated[int, typer.Option(min=1, help="jobs run at once (one GPU: keep 1)")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo or threads")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Consume `flame.run_stage` jobs from Redis (FLAME_REDIS_URL); needs FLAME_DATABASE_URL and
    the artifact store (FLAME_ARTIFACT_URL, or a FLAME_ARTIFACT_ROOT shared with the API) to match
    the API's. Serves /metrics and /healthz on FLAME_WORKER_METRICS_PORT (default 9808, 0 = off)."""
    from service.artifact_stores import StoreUnavailable, open_store
    from service.cli.registry import fail, registry_problem
    from service.jobs.celery_app import app
    from service.runtime import apply_training_threads
    from service.settings import get_settings

    settings = get_settings()
    if settings.redis_url is None:
        raise typer.BadParameter("FLAME_REDIS_URL is not set; without Redis the API runs jobs itself")
    problem = registry_problem(settings.database_url)
    if problem is not None:
        raise fail(problem)
    try:
        open_store(settings)  # the bucket, once, before Celery starts (each pool process opens its own)
    except StoreUnavailable as e:
        raise fail(str(e)) from None
    apply_training_threads()  # the solo and threads pools run jobs here; prefork children set it again
    app.worker_main(["worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}"])
