"""How a replica learns that alias `active` moved: a PostgreSQL LISTEN on `flame_alias` (at once),
and polling (every few seconds) as the fallback for a missed message or a SQLite registry.

Both end in `ModelHost.reload_if_changed()`, which reads the alias and swaps only when it moved, so
a duplicate or stray message costs one query. The listener reloads once when it (re)connects, to
catch a move made while it was not listening.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from service.inference.host import ModelHost
from service.registry.notify import CHANNEL

log = logging.getLogger("flame.alias")


async def poll_alias(host: ModelHost, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(host.reload_if_changed)
        except Exception:  # noqa: BLE001 - a DB hiccup must not kill the watcher
            log.exception("alias poll failed")


class AliasListener:
    """A daemon thread holding one PostgreSQL connection that LISTENs on `flame_alias`."""

    def __init__(self, *, engine: Engine, host: ModelHost, wait_s: float = 0.5, retry_s: float = 2.0) -> None:
        self.engine, self.host = engine, host
        self.wait_s, self.retry_s = wait_s, retry_s
        self.listening = threading.Event()  # set while LISTEN is active (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flame-alias-listener", daemon=True)

    def start(self) -> AliasListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception:  # noqa: BLE001 - reconnect after any failure (database restart, network)
                log.warning("alias listener lost its connection; reconnecting", exc_info=True)
            self.listening.clear()
            self._stop.wait(self.retry_s)

    def _listen(self) -> None:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.exec_driver_sql(f"LISTEN {CHANNEL}")
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            self.listening.set()
            self.host.reload_if_changed()  # a move made while we were not listening
            while not self._stop.is_set():
                heard = False
                for _ in dbapi.notifies(timeout=self.wait_s, stop_after=1):  # type: ignore[attr-defined]
                    heard = True
                if heard:
                    self.host.reload_if_changed()
        finally:
            conn.invalidate()  # a connection that LISTENs never goes back to the pool
            conn.close()
