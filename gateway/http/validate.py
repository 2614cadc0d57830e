"""Checks a type cannot make: normalised values, path and query values. Each raises the
400 (or 404) that names the field."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping

import msgspec

from gateway import errors

__all__ = [
    "future_instant",
    "has_control_characters",
    "normal_email",
    "path_uuid",
    "query_date",
    "refuse_nul",
]

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


def refuse_nul(value: object, param: str, *, named: bool = True) -> None:
    """A 400 if ``value`` (text, or a mapping, list or struct of text) holds a NUL: Postgres
    text and jsonb cannot, so text the gateway keeps is refused at the edge instead of
    failing in the database. The 400 names where the NUL is (``metadata.owner``,
    ``image[1]``; a mapping's name is blamed on the mapping); ``named`` False: no ``param``.
    """
    where = _nul_in(value, param)
    if where is not None:
        raise errors.InvalidRequest(
            f"'{where}' must not contain NUL characters (\\u0000).",
            param=where if named else None,
        )


def _nul_in(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, Mapping):
        for name, item in value.items():
            if isinstance(name, str) and "\x00" in name:
                return path
            found = _nul_in(item, f"{path}.{name}")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _nul_in(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found = _nul_in(getattr(value, name), f"{path}.{name}")
            if found is not None:
                return found
    return None


def query_date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequest(f"'{name}' must be a date, YYYY-MM-DD.", param=name) from None
