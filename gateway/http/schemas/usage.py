"""``GET /v1/usage``: images per key per UTC day."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["DEFAULT_DAYS", "MAX_DAYS", "Usage", "UsageDay"]

DEFAULT_DAYS = 30
MAX_DAYS = 366


class UsageDay(msgspec.Struct):
    date: dt.date
    api_key_id: uuid.UUID
    images: Annotated[int, Meta(ge=0)]


class Usage(msgspec.Struct):
    data: list[UsageDay]
    total: Annotated[int, Meta(ge=0)]
