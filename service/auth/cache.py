"""API keys checked against the database at most once per TTL, per process, and through its outages.

A prediction should not need the database: a key verified less than `ttl_s` ago is accepted from
memory, so a revocation reaches every replica within `ttl_s`. After that the key is checked again;
if the database is unreachable then, a key verified less than `outage_grace_s` ago is still accepted
(and the database is not asked again for `ttl_s`, so an outage does not cost a connection attempt
per request). A key never seen, or seen longer ago than the grace, cannot be verified: the database
error propagates and the API answers 503. Entries are keyed by the token's sha256; the plaintext is
never kept. Only valid keys are cached, in a bounded LRU, so random tokens cannot grow it. A key
revoked through this process is `forget`-ten at once; an expired key is refused from the cache too.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from service.auth.models import ApiKey
from service.auth.service import authenticate
from service.db import DB_UNAVAILABLE

log = logging.getLogger("flame.auth")
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry:
    key: ApiKey  # detached from its session; read, never modified
    verified_at: float


class KeyCache:
    def __init__(
        self,
        *,
        ttl_s: float,
        outage_grace_s: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or outage_grace_s < 0 or max_entries < 1:
            raise ValueError(
                f"need ttl_s >= 0, outage_grace_s >= 0, max_entries >= 1; "
                f"got {ttl_s}, {outage_grace_s}, {max_entries}"
            )
        self.ttl_s = ttl_s
        self.outage_grace_s = max(outage_grace_s, ttl_s)
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._db_down_until = float("-inf")

    def fresh(self, token: str) -> ApiKey | None:
        """The key of `token` if it was verified within the TTL and has not expired; no I/O, so the
        event loop may call it (a miss goes to `authenticate` in a thread)."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or entry.key.expired() or self._clock() - entry.verified_at >= self.ttl_s:
            return None
        return entry.key

    def authenticate(self, *, session_factory: sessionmaker[Session], token: str) -> ApiKey | None:
        """The active key of `token`, or None (401) for an unknown, malformed or revoked one.
        Raises the database's error when the key cannot be verified (503)."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            db_down = now < self._db_down_until
        if entry is not None and entry.key.expired():
            self.forget(entry.key.id)
            return None
        age = now - entry.verified_at if entry is not None else float("inf")
        if entry is not None and (age < self.ttl_s or (db_down and age < self.outage_grace_s)):
            return entry.key
        try:
            with session_factory() as session:
                key = authenticate(session=session, token=token)
                if key is not None:
                    session.expunge(key)
        except DB_UNAVAILABLE:
            if entry is None or age >= self.outage_grace_s:
                raise
            with self._lock:
                self._db_down_until = now + self.ttl_s
            log.warning("database unreachable: accepting key %s verified %.1fs ago", entry.key.prefix, age)
            return entry.key
        with self._lock:
            if key is None:
                self._entries.pop(digest, None)
            else:
                self._entries[digest] = _Entry(key, now)
                self._entries.move_to_end(digest)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return key

    def forget(self, key_id: str) -> None:
        """Drop every cached entry of key `key_id` (just revoked here): its next use asks the database."""
        with self._lock:
            for digest in [d for d, e in self._entries.items() if e.key.id == key_id]:
                del self._entries[digest]
