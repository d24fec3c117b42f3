"""Creating, checking and revoking API keys.

A token is `flm_<prefix>_<secret>`: the prefix (8 hex characters) finds the row, the secret (32
random bytes, URL-safe base64) proves possession. Secrets carry 256 bits of entropy, so a plain
sha256 is enough (no slow KDF needed) and is compared in constant time. The plaintext token is
returned once, at creation, and is nowhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth.models import ApiKey
from service.db import utcnow
from service.registry.errors import ApiKeyNotFound, PermissionDenied

SCOPES = ("predict", "train", "admin")  # admin implies every other scope
TOKEN_PREFIX = "flm"
_PREFIX_HEX = 8


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    if isinstance(scopes, str):
        raise ValueError(f"scopes must be a list of scope names, got the string {scopes!r}")
    out = sorted(set(scopes))
    unknown = [s for s in out if s not in SCOPES]
    if unknown or not out:
        raise ValueError(f"scopes must be a non-empty subset of {list(SCOPES)}, got {list(scopes)!r}")
    return out


def parse_token(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed token, else None (never raises on user input)."""
    if not isinstance(token, str):
        return None
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    prefix, secret = parts[1], parts[2]
    if len(prefix) != _PREFIX_HEX or any(c not in "0123456789abcdef" for c in prefix) or len(secret) < 16:
        return None
    return prefix, secret


def create_api_key(*, session: Session, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A new key and its plaintext token; show the token to the user once, it cannot be recovered."""
    if not name or len(name) > 128:
        raise ValueError(f"name must be 1-128 characters, got {name!r}")
    checked = _check_scopes(scopes)
    prefix = secrets.token_hex(_PREFIX_HEX // 2)
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix = secrets.token_hex(_PREFIX_HEX // 2)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=str(uuid.uuid4()), prefix=prefix, secret_sha256=_hash_secret(secret), scopes=checked, name=name
    )
    session.add(key)
    session.flush()
    return key, f"{TOKEN_PREFIX}_{prefix}_{secret}"


def authenticate(*, session: Session, token: str | None) -> ApiKey | None:
    """The active key that `token` belongs to, or None for a malformed, unknown or revoked token."""
    parsed = parse_token(token) if token else None
    if parsed is None:
        return None
    prefix, secret = parsed
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    expected = key.secret_sha256 if key is not None else _hash_secret("")
    # Hash and compare even for an unknown prefix so timing does not reveal which prefixes exist.
    matches = hmac.compare_digest(_hash_secret(secret), expected)
    if key is None or not matches or key.revoked_at is not None:
        return None
    return key


def has_scope(key: ApiKey, scope: str) -> bool:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    return key.revoked_at is None and ("admin" in key.scopes or scope in key.scopes)


def require_scope(key: ApiKey, scope: str) -> None:
    """Raise PermissionDenied unless `key` grants `scope` (admin grants everything)."""
    if not has_scope(key, scope):
        raise PermissionDenied(
            f"API key {key.prefix!r} lacks the {scope!r} scope (it has {key.scopes})", field="scope"
        )


def revoke_api_key(*, session: Session, key_id: str) -> ApiKey:
    """Revoke a key for good; revoking twice keeps the first revocation time."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise ApiKeyNotFound(f"API key {key_id!r} not found", field="key_id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def list_api_keys(*, session: Session, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))
