"""Usage as Postgres holds it, and the UTC day it is counted under."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

__all__ = ["today", "usage_rows"]


async def usage_rows(db: asyncpg.Connection, key_id: uuid.UUID) -> dict[dt.date, int]:
    rows = await db.fetch("SELECT usage_date, image_count FROM usage WHERE api_key_id = $1", key_id)
    return {r["usage_date"]: r["image_count"] for r in rows}


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
