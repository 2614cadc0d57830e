"""``GET /v1/usage``: images and credits per key per UTC day, or summed by day or key."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["DEFAULT_DAYS", "GROUPINGS", "MAX_DAYS", "Usage", "UsageDay"]

DEFAULT_DAYS = 30
MAX_DAYS = 366
#: What ``group_by`` may be: rows per day (all keys summed) or per key (all days summed).
GROUPINGS = ("day", "key")


class UsageDay(msgspec.Struct):
    #: null with ``group_by=key``.
    date: dt.date | None
    #: null with ``group_by=day``.
    api_key_id: uuid.UUID | None
    images: Annotated[int, Meta(ge=0)]
    #: What the charges and refunds came to (plans with monthly_credits), as of the last
    #: usage flush.
    credits: int = 0


class Usage(msgspec.Struct):
    data: list[UsageDay]
    total: Annotated[int, Meta(ge=0)]
    #: The credits of all the rows.
    credits: int = 0
