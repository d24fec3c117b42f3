"""Pydantic shapes of the keys API (`/keys`); the ORM row and the token hash stay inside."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from service.auth.service import parse_duration
from service.orm import utcnow

Scope = Literal["predict", "stat", "train", "admin"]


class KeyCreate(BaseModel):
    """`POST /keys`: who uses the key, what it may do, and optionally when it stops working."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    scopes: list[Scope] = Field(min_length=1)
    expires_in: str | None = Field(default=None, description="e.g. 30d, 12h, 2w (units s, m, h, d, w)")
    expires_at: AwareDatetime | None = None

    @field_validator("expires_in")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise ValueError(f"expires_at must be in the future, got {value.isoformat()}")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give expires_in or expires_at, not both")
        return self

    def expiry(self) -> datetime | None:
        if self.expires_in is not None:
            return utcnow() + parse_duration(self.expires_in)
        return self.expires_at


class KeyOut(BaseModel):
    id: str
    prefix: str
    name: str
    scopes: list[str]
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    token: str = Field(description="the bearer token, shown this once: only its hash is stored")
