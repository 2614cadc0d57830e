"""Self-service API keys: what a client sends and what it is shown (never the key's hash)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from gateway.http.schemas.base import CONTROL_FREE, Instant, RequestBody

__all__ = [
    "MAX_GRACE_SECONDS",
    "MAX_KEY_NAME",
    "CreatedKey",
    "Key",
    "KeyList",
    "NewKey",
    "Rotation",
    "created_key",
    "key_of",
]

MAX_KEY_NAME = 100
MAX_GRACE_SECONDS = 7 * 86400
EXPIRES_AT_MESSAGE = "'expires_at' must be a future ISO-8601 date and time with a time zone."


class NewKey(RequestBody):
    name: Annotated[str, Meta(min_length=1, max_length=MAX_KEY_NAME, pattern=CONTROL_FREE)]
    expires_at: Annotated[
        Instant | None,
        Meta(description="In the future, with a time zone."),
    ] = None

    messages: ClassVar[Mapping[str, str]] = {
        "name": f"'name' is required: a string of 1 to {MAX_KEY_NAME} characters, "
        "without control characters.",
        "expires_at": EXPIRES_AT_MESSAGE,
    }


class Rotation(RequestBody):
    grace_seconds: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_GRACE_SECONDS)] | None,
        Meta(description="How long the old key keeps working."),
    ] = 0

    messages: ClassVar[Mapping[str, str]] = {
        "grace_seconds": f"'grace_seconds' must be a whole number from 0 to {MAX_GRACE_SECONDS}"
        " (or null).",
    }


class Key(msgspec.Struct):
    id: uuid.UUID
    name: str
    prefix: Annotated[str, Meta(description="A short display form, never the key.")]
    is_active: bool
    created_at: Instant
    last_used_at: Instant | None
    expires_at: Instant | None


class CreatedKey(msgspec.Struct):
    id: uuid.UUID
    name: str
    key: Annotated[str, Meta(description="The whole key: shown this once, never again.")]
    prefix: str
    created_at: Instant
    expires_at: Instant | None


class KeyList(msgspec.Struct):
    data: list[Key]


def key_of(row: Mapping[str, Any]) -> Key:
    """A key as the API shows it, from its ``api_keys`` row."""
    return Key(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        is_active=row["is_active"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
    )


def created_key(key: str, row: Mapping[str, Any]) -> CreatedKey:
    return CreatedKey(
        id=row["id"],
        name=row["name"],
        key=key,
        prefix=row["prefix"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )
