"""Usage as Postgres holds it, and the UTC day it is counted under."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

__all__ = ["model_usage_rows", "store_usage", "today", "usage_rows"]


async def usage_rows(db: asyncpg.Connection, key_id: uuid.UUID) -> dict[dt.date, int]:
    rows = await db.fetch("SELECT usage_date, image_count FROM usage WHERE api_key_id = $1", key_id)
    return {r["usage_date"]: r["image_count"] for r in rows}


async def model_usage_rows(
    db: asyncpg.Connection, key_id: uuid.UUID
) -> dict[tuple[dt.date, str, str], tuple[int, int]]:
    """The key's usage by (day, model, backend): (images, credits)."""
    rows = await db.fetch(
        "SELECT usage_date, model, backend, image_count, credits FROM usage_by_model"
        " WHERE api_key_id = $1",
        key_id,
    )
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}


async def store_usage(
    db: asyncpg.Connection,
    key_id: uuid.UUID | str,
    day: dt.date,
    images: int,
    *,
    model: str = "local",
    backend: str = "local",
    credits: int = 0,
) -> None:
    """A day's usage as an earlier flush left it in Postgres: the day's count and its
    breakdown by model and backend."""
    key = uuid.UUID(str(key_id))
    await db.execute(
        "INSERT INTO usage (api_key_id, usage_date, image_count) VALUES ($1, $2, $3)",
        key,
        day,
        images,
    )
    await db.execute(
        "INSERT INTO usage_by_model (api_key_id, usage_date, model, backend, image_count,"
        " credits) VALUES ($1, $2, $3, $4, $5, $6)",
        key,
        day,
        model,
        backend,
        images,
        credits,
    )


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
