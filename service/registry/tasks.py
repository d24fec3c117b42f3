"""Tasks and modalities as a version sees them: those introduced along its lineage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.registry.errors import Conflict, TaskNotFound
from service.registry.lineage import lineage_ids
from service.registry.models import Modality, Task
from service.registry.records import ModalityRecord, TaskRecord


def _lineage(session: Session, version: str) -> list[str]:
    return lineage_ids(session=session, version=version)


def list_tasks(*, session: Session, version: str) -> list[Task]:
    """The tasks `version` serves, in the order they were introduced."""
    ids = _lineage(session, version)
    return list(session.scalars(select(Task).where(Task.version_id.in_(ids)).order_by(Task.cursor, Task.id)))


def get_task(*, session: Session, name: str, version: str) -> Task:
    """Task `name` as served by `version`; TaskNotFound lists the tasks it does serve."""
    ids = _lineage(session, version)
    row = session.scalars(select(Task).where(Task.name == name, Task.version_id.in_(ids))).one_or_none()
    if row is None:
        known = [t.name for t in list_tasks(session=session, version=version)]
        raise TaskNotFound(
            f"task {name!r} is not served by model version {version!r}; tasks: {known}", field="task"
        )
    return row


def list_modalities(*, session: Session, version: str) -> list[Modality]:
    ids = _lineage(session, version)
    query = select(Modality).where(Modality.version_id.in_(ids)).order_by(Modality.id)
    return list(session.scalars(query))


def update_model_card(*, session: Session, name: str, version: str, card: dict[str, Any]) -> Task:
    """Replace a task's model card (intended use, data provenance, known failure modes)."""
    if not isinstance(card, dict):
        raise ValueError(f"model card must be a JSON object, got {type(card).__name__}")
    row = get_task(session=session, name=name, version=version)
    row.model_card = dict(card)
    session.flush()
    return row


def plan_new_specs(
    *, session: Session, visible: list[str], tasks: Sequence[TaskRecord], modalities: Sequence[ModalityRecord]
) -> tuple[list[ModalityRecord], list[TaskRecord]]:
    """Which of a stage's modalities and tasks need new rows, refusing clashes with the parent lineage.

    A modality re-declared with the same kind and spec is reused; with a different one it is a
    Conflict (the stored model's encoder would not fit). A task name may be introduced once per lineage.
    """
    for what, names in (("task", [t.name for t in tasks]), ("modality", [m.name for m in modalities])):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate {what} names in one stage: {dupes}")
    rows = session.scalars(select(Modality).where(Modality.version_id.in_(visible)))
    known_mods = {m.name: m for m in rows}
    new_mods = []
    for m in modalities:
        old = known_mods.get(m.name)
        if old is None:
            new_mods.append(m)
        elif (old.kind, old.spec) != (m.kind, m.spec):
            raise Conflict(
                f"modality {m.name!r} already exists as {old.kind} {old.spec}; a stage cannot "
                f"redeclare it as {m.kind} {m.spec}",
                field=f"modalities.{m.name}",
            )
    known_tasks = set(session.scalars(select(Task.name).where(Task.version_id.in_(visible))))
    clash = sorted(t.name for t in tasks if t.name in known_tasks)
    if clash:
        raise Conflict(f"tasks {clash} already exist in the parent version's lineage", field="tasks")
    available = set(known_mods) | {m.name for m in modalities}
    for t in tasks:
        missing = [m for m in t.spec.get("modalities", []) if m not in available]
        if missing:
            raise ValueError(f"task {t.name!r} uses undeclared modalities {missing}; declare them too")
    return new_mods, list(tasks)
