"""Dependencies of the jobs and datasets routers, read from the app's lifespan state.

The app sets `app.state.settings`, `app.state.session_factory` and `app.state.store`; nothing here
builds an engine or a store. `require_scope(scope)` checks the Bearer API key (when auth is on) and
yields the caller's name, which the routers record as `created_by` / `moved_by`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts import ArtifactStore
from service.auth import service as auth
from service.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; routers commit explicitly what must be durable before they answer."""
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


def require_scope(scope: str) -> Callable[..., str]:
    """A dependency that answers 401 without a valid key, 403 without `scope`; returns the caller."""

    def check(request: Request, settings: SettingsDep) -> str:
        if not settings.auth_enabled:
            return "anonymous"
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        with request.app.state.session_factory() as session:
            key = auth.authenticate(session=session, token=token)
            if key is None:
                raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
            auth.require_scope(key, scope)  # PermissionDenied -> 403 by the app's handler
            return f"key:{key.name}"

    return check
