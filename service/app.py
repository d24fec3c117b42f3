"""The FastAPI application: `create_app(settings)`; global state lives only in its lifespan.

The lifespan builds the engine, session factory, artifact store, ModelHost, API-key cache, audit
writer, the in-process job queue (without Redis) and the job reaper on `app.state`, and loads the
`active` version. A version committed by a worker (or a rollback) is served without a restart: on
PostgreSQL a listener hears the move at once (NOTIFY), and the alias is polled every
`RELOAD_INTERVAL_S` as the fallback. The in-process queue re-enqueues the jobs an earlier process
left unfinished. Shutdown hands a running in-process job back to the queue and flushes the audit
writer. Importing this module does nothing heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from service.artifact_stores import open_store
from service.auth.cache import KeyCache
from service.auth.router import router as keys_router
from service.datasets.router import router as datasets_router
from service.db import make_engine, make_session_factory
from service.errors import BodySizeLimitMiddleware, install_error_handlers
from service.inference.alias_watch import AliasListener, poll_alias
from service.inference.audit_writer import AuditWriter
from service.inference.batcher import Batcher
from service.inference.host import ModelHost
from service.inference.nearest import router as nearest_router
from service.inference.router import router as inference_router
from service.jobs.queue import LocalQueue, enqueue
from service.jobs.reaper import Reaper
from service.jobs.router import router as jobs_router
from service.jobs.scoring_routes import router as scoring_router
from service.limits import ContentTypeMiddleware
from service.logs import configure_logging
from service.observability import (
    ObservabilityMiddleware,
    render_metrics,
    worker_exiting,
)
from service.openapi import install_openapi
from service.registry.cards import router as cards_router
from service.registry.router import router as registry_router
from service.registry_metrics import RegistryCollector
from service.runtime import apply_torch_threads
from service.settings import Settings, get_settings

log = logging.getLogger("flame.app")
RELOAD_INTERVAL_S = 5.0

health_router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description="`database` and `model`: `ok`, or why not")


@health_router.get("/healthz", response_model=Health)
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@health_router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "No model is loaded or the database is unreachable."}
    },
)
def readyz(request: Request) -> JSONResponse:
    """Readiness: a model version is loaded and the database answers; 503 otherwise."""
    host: ModelHost = request.app.state.host
    checks: dict[str, str] = {}
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unreachable: {type(e).__name__}"
    loaded = host.current
    checks["model"] = f"ok ({loaded.id})" if loaded is not None else (host.last_error or "not loaded")
    ready = loaded is not None and checks["database"] == "ok"
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@health_router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "The Prometheus text exposition format."}},
)
def metrics(request: Request) -> Response:
    """Prometheus exposition (no auth: scrape it from inside the network): this process's metrics and
    the registry's, read at scrape time (job counts and durations, promotions, the `active` version)."""
    collector = getattr(request.app.state, "registry_metrics", None)
    payload, content_type = render_metrics(*([collector] if collector is not None else []))
    return Response(payload, media_type=content_type)


# Routers every API process serves.
ROUTERS: list[APIRouter] = [
    cards_router,
    health_router,
    inference_router,
    nearest_router,
    datasets_router,
    jobs_router,
    scoring_router,
    registry_router,
    keys_router,
]


def _start_jobs(app: FastAPI, settings: Settings) -> None:
    """The in-process queue (only without Redis), recovered from the database, and the reaper."""
    factory = app.state.session_factory
    queue = None
    if settings.redis_url is None:
        queue = LocalQueue(
            session_factory=factory,
            store=app.state.store,
            settings=settings,
            on_success=app.state.host.reload_if_changed,  # this replica serves a stage it just ran
        )
        try:
            queue.recover()
        except Exception:  # noqa: BLE001 - start anyway; the reaper picks up stale jobs later
            log.exception("re-enqueueing unfinished jobs failed")
    app.state.job_queue = queue
    requeue = partial(enqueue, settings=settings, local=queue, force=True)
    app.state.reaper = Reaper(session_factory=factory, settings=settings, requeue=requeue).start()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store = await run_in_threadpool(open_store, settings)  # StoreUnavailable: the api refuses to start
    engine = make_engine(settings.database_url)
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.registry_metrics = RegistryCollector(app.state.session_factory)
    app.state.store = store
    app.state.key_cache = KeyCache(
        ttl_s=settings.auth_cache_ttl_s, outage_grace_s=settings.auth_outage_grace_s
    )
    app.state.audit_writer = AuditWriter(
        session_factory=app.state.session_factory,
        spool_path=settings.audit_spool_path or settings.artifact_root / "audit-spool.jsonl",
    )
    app.state.audit_writer.start()
    app.state.host = ModelHost(
        store=app.state.store,
        session_factory=app.state.session_factory,
        device=settings.device,
        batch_invariant=settings.batch_invariant,
    )
    app.state.batcher = Batcher(
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue_depth=settings.max_queue_depth,
    )
    app.state.batcher.start()
    try:
        await run_in_threadpool(app.state.host.reload_if_changed)
    except Exception:  # noqa: BLE001 - start anyway; /readyz says why it is not ready
        log.exception("initial model load failed")
    listener = None
    if engine.dialect.name == "postgresql":
        listener = AliasListener(engine=engine, host=app.state.host).start()
    app.state.alias_listener = listener
    watcher = asyncio.create_task(poll_alias(app.state.host, app.state.reload_interval_s))
    await run_in_threadpool(_start_jobs, app, settings)
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if listener is not None:
            await run_in_threadpool(listener.stop)
        await run_in_threadpool(app.state.reaper.stop)
        if app.state.job_queue is not None:
            await run_in_threadpool(app.state.job_queue.stop)  # the running job goes back to the queue
        await run_in_threadpool(app.state.batcher.stop)  # answers the queued predictions first
        await run_in_threadpool(app.state.audit_writer.stop)  # flushes queued audit rows
        engine.dispose()
        worker_exiting()  # with several workers: this process's live gauges leave /metrics


def create_app(settings: Settings | None = None, *, reload_interval_s: float = RELOAD_INTERVAL_S) -> FastAPI:
    """A new app for `settings` (default: from the environment); nothing connects until startup."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    apply_torch_threads(settings, serving=True)  # here: each `--workers N` child builds its own app
    app = FastAPI(title="FLAME Serve", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.reload_interval_s = reload_interval_s
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)
    # Added innermost first: metrics and request id see every response, including 413s and 415s.
    app.add_middleware(ContentTypeMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        dataset_max_bytes=settings.max_dataset_bytes,
        model_max_bytes=settings.max_model_bytes,
    )
    app.add_middleware(ObservabilityMiddleware)
    return app
