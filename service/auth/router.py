"""Routes: `GET /keys`, `POST /keys` (the token is in this one answer only), `DELETE /keys/{key_id}`.

All need the admin scope. A revocation is committed, then dropped from this process's key cache, so
the key gets 401 at once here and within `FLAME_AUTH_CACHE_TTL_S` on other replicas.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from service.auth import service
from service.auth.models import ApiKey
from service.auth.schemas import KeyCreate, KeyCreated, KeyOut
from service.deps import KeyCacheDep, SessionDep, require_scope
from service.openapi import errors

router = APIRouter(tags=["keys"])
AdminKey = Annotated[ApiKey | None, Depends(require_scope("admin"))]
KeyBody = Annotated[
    KeyCreate,
    Body(
        openapi_examples={
            "ward_app": {
                "summary": "a prediction key for one client app, valid 30 days",
                "value": {"name": "icu-dashboard", "scopes": ["predict"], "expires_in": "30d"},
            },
            "trainer": {"summary": "an ML engineer's key", "value": {"name": "ml-team", "scopes": ["train"]}},
        }
    ),
]


@router.get("/keys", response_model=list[KeyOut], responses=errors(422))
def list_keys(session: SessionDep, _: AdminKey, include_revoked: Annotated[bool, Query()] = False) -> Any:
    """API keys, oldest first (expired ones included; revoked ones with `include_revoked=true`)."""
    return [
        service.key_out(k) for k in service.list_api_keys(session=session, include_revoked=include_revoked)
    ]


@router.post("/keys", status_code=201, response_model=KeyCreated, responses=errors(422))
def create_key(body: KeyBody, session: SessionDep, _: AdminKey) -> Any:
    """Mint a key; its token is in this answer and nowhere else (only a hash is stored)."""
    key, token = service.create_api_key(
        session=session, name=body.name, scopes=body.scopes, expires_at=body.expiry()
    )
    session.commit()
    return {**service.key_out(key), "token": token}


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=errors(404, 422))
def revoke_key(key_id: str, session: SessionDep, cache: KeyCacheDep, _: AdminKey) -> Any:
    """Revoke a key (by id or prefix) for good; revoking it again changes nothing."""
    key = service.revoke_api_key(session=session, key_id=key_id)
    session.commit()
    cache.forget(key.id)
    return service.key_out(key)
