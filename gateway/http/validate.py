"""Small validators for request fields; each raises the 400 (or 404) that names the field."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from gateway import errors

__all__ = [
    "email_field",
    "future_datetime_field",
    "has_control_characters",
    "int_field",
    "path_uuid",
    "query_date",
    "text_field",
]

# No white space, no control characters (Postgres text cannot hold NUL).
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_field(body: dict[str, Any], name: str, *, least: int = 1, most: int = 100) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not least <= len(value) <= most or _CONTROL.search(value):
        raise errors.InvalidRequest(
            f"'{name}' is required: a string of {least} to {most} characters, "
            "without control characters.",
            param=name,
        )
    return value


def email_field(body: dict[str, Any]) -> str:
    """A normalised email: trimmed, lower case."""
    value = body.get("email")
    email = value.strip().lower() if isinstance(value, str) else ""
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise errors.InvalidRequest("'email' must be a valid email address.", param="email")
    return email


def int_field(
    body: dict[str, Any], name: str, *, least: int, most: int, nullable: bool = False
) -> int | None:
    value = body.get(name)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise errors.InvalidRequest(
            f"'{name}' must be a whole number from {least} to {most}"
            + (" (or null)." if nullable else "."),
            param=name,
        )
    return value


def future_datetime_field(body: dict[str, Any], name: str, now: float) -> dt.datetime | None:
    value = body.get(name)
    if value is None:
        return None
    parsed = None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is not None and parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(dt.UTC)  # must exist in UTC, too
        except (OverflowError, ValueError):
            parsed = None
    if parsed is None or parsed.tzinfo is None or parsed.timestamp() <= now:
        raise errors.InvalidRequest(
            f"'{name}' must be a future ISO-8601 date and time with a time zone.", param=name
        )
    return parsed


def path_uuid(value: str) -> uuid.UUID:
    """An id from the path; anything that is not one is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.NotFound() from None


def has_control_characters(value: str) -> bool:
    return _CONTROL.search(value) is not None


def query_date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequest(f"'{name}' must be a date, YYYY-MM-DD.", param=name) from None
