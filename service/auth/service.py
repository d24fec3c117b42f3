"""Creating, checking and revoking API keys.

A token is `flm_<prefix>_<secret>`: the prefix (8 hex characters) finds the row, the secret (32
random bytes, URL-safe base64) proves possession. Secrets carry 256 bits of entropy, so a plain
sha256 is enough (no slow KDF needed) and is compared in constant time. The plaintext token is
returned once, at creation, and is nowhere else. A key may expire (`expires_at`); an expired or
revoked key authenticates to nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth.models import ApiKey
from service.orm import utcnow
from service.registry.errors import ApiKeyNotFound, PermissionDenied

# admin implies every other scope; `stat` lets a key send `X-Flame-Priority: stat` predictions
SCOPES = ("predict", "stat", "train", "admin")
TOKEN_PREFIX = "flm"
_PREFIX_HEX = 8
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


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


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `45s` as a timedelta; ValueError naming the text otherwise."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"a duration is a positive number and a unit s, m, h, d or w (e.g. 30d), got {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def create_api_key(
    *, session: Session, name: str, scopes: Iterable[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key and its plaintext token; show the token to the user once, it cannot be recovered."""
    if not name or len(name) > 128:
        raise ValueError(f"name must be 1-128 characters, got {name!r}")
    checked = _check_scopes(scopes)
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= utcnow()):
        raise ValueError(f"expires_at must be a timezone-aware time in the future, got {expires_at!r}")
    prefix = secrets.token_hex(_PREFIX_HEX // 2)
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix = secrets.token_hex(_PREFIX_HEX // 2)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=str(uuid.uuid4()),
        prefix=prefix,
        secret_sha256=_hash_secret(secret),
        scopes=checked,
        name=name,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return key, f"{TOKEN_PREFIX}_{prefix}_{secret}"


def authenticate(*, session: Session, token: str | None) -> ApiKey | None:
    """The active key that `token` belongs to, or None for a malformed, unknown, revoked or expired
    token."""
    parsed = parse_token(token) if token else None
    if parsed is None:
        return None
    prefix, secret = parsed
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    expected = key.secret_sha256 if key is not None else _hash_secret("")
    # Hash and compare even for an unknown prefix so timing does not reveal which prefixes exist.
    matches = hmac.compare_digest(_hash_secret(secret), expected)
    if key is None or not matches or not key.active:
        return None
    return key


def has_scope(key: ApiKey, scope: str) -> bool:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    return key.active and ("admin" in key.scopes or scope in key.scopes)


def require_scope(key: ApiKey, scope: str) -> None:
    """Raise PermissionDenied unless `key` grants `scope` (admin grants everything)."""
    if not has_scope(key, scope):
        raise PermissionDenied(
            f"API key {key.prefix!r} lacks the {scope!r} scope (it has {key.scopes})", field="scope"
        )


def get_api_key(*, session: Session, key_id: str) -> ApiKey:
    """A key by its id, or by its prefix (the 8 hex characters after `flm_` that `flame keys list`
    shows); ApiKeyNotFound otherwise."""
    key = session.get(ApiKey, key_id)
    if key is None and len(key_id) == _PREFIX_HEX:
        key = session.scalars(select(ApiKey).where(ApiKey.prefix == key_id)).one_or_none()
    if key is None:
        raise ApiKeyNotFound(f"API key {key_id!r} not found (give its id or prefix)", field="key_id")
    return key


def revoke_api_key(*, session: Session, key_id: str) -> ApiKey:
    """Revoke a key (by id or prefix) for good; revoking twice keeps the first revocation time."""
    key = get_api_key(session=session, key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def list_api_keys(*, session: Session, include_revoked: bool = False) -> list[ApiKey]:
    """Keys oldest first; expired keys are listed (their state says so), revoked ones on request."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def any_api_key(*, session: Session) -> bool:
    """Whether any key was ever created (revoked and expired ones count): bootstrap mints the first."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def key_state(key: ApiKey) -> str:
    return "revoked" if key.revoked_at is not None else "expired" if key.expired() else "active"


def key_out(key: ApiKey) -> dict[str, Any]:
    """What an admin may see of a key: never its hash."""
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "scopes": key.scopes,
        "state": key_state(key),
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }
