"""FastAPI dependencies: the app's settings, sessions, model host and API-key auth.

Everything comes from `app.state` (built in the lifespan), never from module globals, so tests can
run several apps side by side. Every router takes its dependencies from this module. Dependencies
that do no I/O are `async def`: FastAPI runs a plain `def` one in the thread pool, a hop per request.

No `from __future__ import annotations` here: FastAPI must resolve the `Annotated` dependency of
`require_caller`'s inner function, which names a closure variable.
"""

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts import ArtifactStore
from service.auth.cache import KeyCache
from service.auth.models import ApiKey
from service.auth.service import SCOPES, has_scope
from service.db import session_scope
from service.errors import Unauthenticated
from service.inference.host import ModelHost
from service.jobs.queue import LocalQueue
from service.registry.errors import PermissionDenied
from service.settings import Settings


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


def get_session(request: Request) -> Iterator[Session]:
    """A unit of work per request: committed when the route returns, rolled back if it raises.
    Requests that may write (not GET/HEAD/OPTIONS) take SQLite's write lock when they begin."""
    write = request.method not in ("GET", "HEAD", "OPTIONS")
    with session_scope(request.app.state.session_factory, write=write) as session:
        yield session


async def get_host(request: Request) -> ModelHost:
    return request.app.state.host


async def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


async def get_key_cache(request: Request) -> KeyCache:
    return request.app.state.key_cache


async def get_job_queue(request: Request) -> LocalQueue | None:
    """The app's in-process queue (None when jobs go to Celery)."""
    return getattr(request.app.state, "job_queue", None)


async def get_optional_host(request: Request) -> ModelHost | None:
    """The app's model host, if this app serves predictions (an app of the jobs routers alone does not)."""
    return getattr(request.app.state, "host", None)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
SessionDep = Annotated[Session, Depends(get_session)]
HostDep = Annotated[ModelHost, Depends(get_host)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
KeyCacheDep = Annotated[KeyCache, Depends(get_key_cache)]
JobQueueDep = Annotated[LocalQueue | None, Depends(get_job_queue)]
OptionalHostDep = Annotated[ModelHost | None, Depends(get_optional_host)]


# Documents the scheme (the /docs Authorize button); errors stay ours, so it never raises itself.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description="An API key, `flm_<prefix>_<secret>`, with the scope the route needs: "
    "`predict`, `stat`, `train` or `admin` (admin grants every scope).",
    auto_error=False,
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey | None]]:
    """A dependency: the caller's API key if it grants `scope` (401 without a valid key, 403 without
    the scope); None when `settings.auth_enabled` is false. Keys come through `app.state.key_cache`,
    so a recently verified key works while the database is down."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")

    async def dependency(request: Request, credentials: Credentials) -> ApiKey | None:
        settings: Settings = request.app.state.settings
        if not settings.auth_enabled:
            return None
        token = credentials.credentials.strip() if credentials is not None else ""
        if not token:
            raise Unauthenticated(
                "missing API key: send 'Authorization: Bearer <token>'", field="authorization"
            )
        cache: KeyCache = request.app.state.key_cache
        key = cache.fresh(token)  # the common case: no I/O, no thread hop
        if key is None:
            key = await run_in_threadpool(
                cache.authenticate, session_factory=request.app.state.session_factory, token=token
            )
        if key is None:
            raise Unauthenticated("invalid or revoked API key", field="authorization")
        if not has_scope(key, scope):
            raise PermissionDenied(f"API key {key.prefix!r} lacks the {scope!r} scope", field="scope")
        request.state.caller_key_id = key.id
        return key

    dependency.__name__ = f"require_{scope}"
    return dependency


def require_caller(scope: str) -> Callable[..., Awaitable[str]]:
    """`require_scope(scope)`, answering the caller's name instead of the key (recorded as
    `created_by` / `moved_by`): `key:<name>`, or `anonymous` when auth is off."""
    key_dependency = require_scope(scope)

    async def caller(key: Annotated[ApiKey | None, Depends(key_dependency)]) -> str:
        return "anonymous" if key is None else f"key:{key.name}"[:128]  # fits every *_by column

    caller.__name__ = f"caller_{scope}"
    return caller
