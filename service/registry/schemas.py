"""Pydantic shapes of the registry routes this package serves (`POST /models`)."""

from __future__ import annotations

from pydantic import Field

from service.jobs.schemas import VersionDetail


class RegisteredVersion(VersionDetail):
    """The new root version (as `GET /models/{version}` shows it), whether `active` moved to it, and
    what the checkpoint lacked (e.g. training ranges)."""

    activated: bool
    warnings: list[str] = Field(default_factory=list)
