"""Queries on the usage table."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["EPOCH", "count_for_day", "date_of_day", "write_counts"]

EPOCH = dt.date(1970, 1, 1)


def date_of_day(day: int) -> dt.date:
    """The date of a UTC day number (days since 1970-01-01)."""
    return EPOCH + dt.timedelta(days=day)


async def count_for_day(conn: Any, key_id: uuid.UUID, date: dt.date) -> int:
    value = await conn.fetchval(
        "SELECT image_count FROM usage WHERE api_key_id = $1 AND usage_date = $2", key_id, date
    )
    return int(value) if value is not None else 0


async def write_counts(
    conn: Any,
    key_ids: Sequence[uuid.UUID],
    dates: Sequence[dt.date],
    counts: Sequence[int],
    counted_at: dt.datetime,
) -> None:
    """Set each (key, date) row to its absolute count, read at ``counted_at``.

    Idempotent: writing the same reading twice changes nothing, and a reading older
    than the row's never overwrites it. Rows of keys deleted meanwhile are skipped.
    """
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO usage (api_key_id, usage_date, image_count, counted_at)
            SELECT d.api_key_id, d.usage_date, d.image_count, $4
            FROM unnest($1::uuid[], $2::date[], $3::int[]) AS d(api_key_id, usage_date, image_count)
            JOIN api_keys k ON k.id = d.api_key_id
            ORDER BY d.api_key_id, d.usage_date
            ON CONFLICT (api_key_id, usage_date) DO UPDATE
                SET image_count = EXCLUDED.image_count, counted_at = EXCLUDED.counted_at
                WHERE usage.counted_at <= EXCLUDED.counted_at
            """,
            key_ids,
            dates,
            counts,
            counted_at,
        )
        await conn.execute(
            """
            UPDATE api_keys SET last_used_at = $2
            WHERE id = ANY($1::uuid[]) AND (last_used_at IS NULL OR last_used_at < $2)
            """,
            sorted(set(key_ids)),
            counted_at,
        )
