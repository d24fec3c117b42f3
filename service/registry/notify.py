"""Alias moves announced to every API replica: PostgreSQL `NOTIFY flame_alias`.

`publish_alias_move` runs inside the transaction that moves the alias, so the notification is
delivered when (and only if) that transaction commits: a replica that hears it reads the new alias.
Each replica listens (`service.inference.alias_watch.AliasListener`) and reloads its model host on a
message; polling stays as the fallback (and is all a SQLite registry has: its replicas share one
host, where the in-process queue reloads the app's host itself after a stage).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

CHANNEL = "flame_alias"


def publish_alias_move(*, session: Session, alias: str, version: str) -> None:
    """`NOTIFY flame_alias, '<alias>:<version>'` on PostgreSQL; nothing on other databases."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": f"{alias}:{version}"},
        )
