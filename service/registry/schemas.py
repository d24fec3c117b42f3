"""Pydantic shapes at the edge of the registry API: tasks, model versions, alias moves, uploads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.registry.records import NAME_PATTERN, NO_NUL


class TaskOut(BaseModel):
    name: str
    spec: dict[str, Any]
    cursor: int
    introduced_in: str
    metrics: dict[str, Any]
    model_card: dict[str, Any]


class VersionOut(BaseModel):
    version: str
    parent: str | None
    status: str
    digest: str
    created_by: str
    created_at: datetime
    note: str
    aliases: list[str]
    tasks_introduced: list[str]


class VersionDetail(VersionOut):
    lineage: list[str]
    tasks: list[str]
    files: list[dict[str, Any]]
    reserved_rank_max: int
    n_components: int


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=1000, pattern=NO_NUL, description="kept in the alias history")
    alias: str = Field(
        default="active",
        pattern=NAME_PATTERN,
        description="the alias to move: `active`, or another alias that already exists",
    )


class AliasMove(BaseModel):
    alias: str
    from_version: str | None
    to_version: str
    moved_by: str
    reason: str
    moved_at: datetime


class ActivateOut(BaseModel):
    alias: str
    version: str
    previous: str | None
    history: list[AliasMove]
    serving: str | None = None  # what the replica that answered serves now (it reloads before answering)


class RegisteredVersion(VersionDetail):
    """The new root version (as `GET /models/{version}` shows it), whether `active` moved to it, and
    what the checkpoint lacked (e.g. training ranges)."""

    activated: bool
    warnings: list[str] = Field(default_factory=list)


ACTIVATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "rollback": {
        "summary": "move `active` back to this version",
        "value": {"reason": "rollback: AUROC drop"},
    },
    "alias": {"summary": "move an existing alias", "value": {"alias": "active", "reason": "roll forward"}},
}
