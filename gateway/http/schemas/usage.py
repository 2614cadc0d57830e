"""``GET /v1/usage``: images and credits per key, UTC day and model, or summed by day, key
or model."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["DEFAULT_DAYS", "GROUPINGS", "MAX_DAYS", "Usage", "UsageDay"]

DEFAULT_DAYS = 30
MAX_DAYS = 366
#: What ``group_by`` may be: rows per day (all keys and models summed), per key (all days
#: and models summed) or per model (all days and keys summed).
GROUPINGS = ("day", "key", "model")


class UsageDay(msgspec.Struct):
    #: null with ``group_by=key`` or ``group_by=model``.
    date: dt.date | None
    #: null with ``group_by=day`` or ``group_by=model``.
    api_key_id: uuid.UUID | None
    images: Annotated[int, Meta(ge=0)]
    #: The credits charged for those images (plans with monthly_credits; 0 otherwise).
    credits: int = 0
    #: The model asked for; null unless the rows are per model ("" for usage recorded
    #: before models were).
    model: str | None = None


class Usage(msgspec.Struct):
    data: list[UsageDay]
    total: Annotated[int, Meta(ge=0)]
    #: The credits of all the rows.
    credits: int = 0
