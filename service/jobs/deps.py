"""Dependencies of the jobs and datasets routers: the app's own (`service.deps`), plus the caller's
name, which these routers record as `created_by` / `moved_by`.

No `from __future__ import annotations` here: FastAPI must resolve the `Annotated` dependency of
`caller`, which names a closure variable."""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from service.auth.models import ApiKey
from service.deps import SessionDep, SessionFactoryDep, SettingsDep, StoreDep
from service.deps import require_scope as require_key
from service.inference.host import ModelHost
from service.jobs.queue import LocalQueue

__all__ = [
    "JobQueueDep",
    "OptionalHostDep",
    "SessionDep",
    "SessionFactoryDep",
    "SettingsDep",
    "StoreDep",
    "require_scope",
]


def get_job_queue(request: Request) -> LocalQueue | None:
    """The app's in-process queue (None when jobs go to Celery)."""
    return getattr(request.app.state, "job_queue", None)


def get_optional_host(request: Request) -> ModelHost | None:
    """The app's model host, if this app serves predictions (an app of the jobs routers alone does not)."""
    return getattr(request.app.state, "host", None)


JobQueueDep = Annotated[LocalQueue | None, Depends(get_job_queue)]
OptionalHostDep = Annotated[ModelHost | None, Depends(get_optional_host)]


def require_scope(scope: str) -> Callable[..., str]:
    """`service.deps.require_scope` (401 without a valid key, 403 without `scope`), answering the
    caller's name instead of the key: `key:<name>`, or `anonymous` when auth is off."""
    key_dependency = require_key(scope)

    def caller(key: Annotated[ApiKey | None, Depends(key_dependency)]) -> str:
        return "anonymous" if key is None else f"key:{key.name}"[:128]  # fits every *_by column

    return caller
