"""Checks a type cannot make: normalised values, path and query values. Each raises the
400 (or 404) that names the field."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from gateway import errors

__all__ = ["future_instant", "has_control_characters", "normal_email", "path_uuid", "query_date"]

# No white space, no control characters (Postgres text cannot hold NUL).
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normal_email(value: str, message: str) -> str:
    """``value`` trimmed and lower-cased; ``message`` is the 400 if it is no email."""
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise errors.InvalidRequest(message, param="email")
    return email


def future_instant(
    value: dt.datetime | None, name: str, now: float, message: str
) -> dt.datetime | None:
    """``value`` in UTC if it is in the future (it must exist in UTC, too)."""
    if value is None:
        return None
    try:
        utc = value.astimezone(dt.UTC)
        if utc.timestamp() > now:
            return utc
    except (OverflowError, ValueError):
        pass
    raise errors.InvalidRequest(message, param=name)


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
