"""Compare-and-swap alias moves: the only way a stage moves `active`.

`move_alias` (versions.py) points an alias wherever an operator says (a rollback). A stage instead
moves `active` from the version it stacked on: `UPDATE aliases SET version = new WHERE alias =
'active' AND version = parent`. If another move got there first (an operator's rollback while the
stage trained), zero rows change, `AliasMoved` is raised and nothing moves, so a stage can never
replace a version whose tasks it does not carry.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.orm import utcnow
from service.registry.errors import AliasMoved, Conflict
from service.registry.lineage import get_version
from service.registry.models import Alias, AliasHistory
from service.registry.notify import publish_alias_move


def check_aliasable(*, session: Session, version: str, moved_by: str) -> None:
    """Any alias move: someone named moves it, to a `ready` version (never a candidate or retired)."""
    if not moved_by:
        raise ValueError("moved_by must name who moves the alias")
    target = get_version(session=session, version=version)
    if target.status != "ready":
        raise Conflict(
            f"model version {version!r} is {target.status}; only ready versions can be aliased",
            field="version",
        )


def swap_alias(
    *, session: Session, alias: str, expected: str, version: str, moved_by: str, reason: str = ""
) -> None:
    """Point `alias` at `version` only if it still points at `expected`; record the move."""
    check_aliasable(session=session, version=version, moved_by=moved_by)
    moved = session.execute(
        update(Alias)
        .where(Alias.name == alias, Alias.version_id == expected)
        .values(version_id=version, updated_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        now = session.scalar(select(Alias.version_id).where(Alias.name == alias))
        raise AliasMoved(
            f"alias {alias!r} points at {now!r}, no longer at {expected!r} which {version!r} was built "
            f"on, so it was not moved ({version!r} may lack what {now!r} serves)",
            field="alias",
        )
    session.add(
        AliasHistory(alias=alias, from_version=expected, to_version=version, moved_by=moved_by, reason=reason)
    )
    session.flush()
    publish_alias_move(session=session, alias=alias, version=version)  # delivered when this commits
