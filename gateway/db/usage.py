"""Queries on the usage table."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

__all__ = [
    "EPOCH",
    "count_for_day",
    "date_of_day",
    "day_of_date",
    "usage_by_key_for_day",
    "usage_by_key_for_range",
    "usage_of_user",
    "usage_rows_between",
    "write_counts",
]

EPOCH = dt.date(1970, 1, 1)
#: Usage rows per INSERT: about 1.5 ms of Postgres's time each.
_ROWS_PER_STATEMENT = 100
#: Keys per ``last_used_at`` UPDATE, which costs a tenth as much per row.
_KEYS_PER_UPDATE = 1000
#: However long a write may be spread over, its statements are never further apart.
_MAX_PAUSE_S = 0.015


def date_of_day(day: int) -> dt.date:
    """The date of a UTC day number (days since 1970-01-01)."""
    return EPOCH + dt.timedelta(days=day)


def day_of_date(date: dt.date) -> int:
    return (date - EPOCH).days


async def count_for_day(conn: Any, key_id: uuid.UUID, date: dt.date) -> int:
    value = await conn.fetchval(
        "SELECT image_count FROM usage WHERE api_key_id = $1 AND usage_date = $2", key_id, date
    )
    return int(value) if value is not None else 0


async def write_counts(
    conn: Any,
    key_ids: Sequence[str | uuid.UUID],
    days: Sequence[int],
    counts: Sequence[int],
    counted_at: dt.datetime,
    *,
    spread: float = 0.0,
) -> None:
    """Set each (key, UTC day number) row to its absolute count, read at ``counted_at``.

    Idempotent: writing the same reading twice changes nothing, and a reading older
    than the row's never overwrites it. Rows of keys deleted meanwhile are skipped.
    A key's ``last_used_at`` moves at most once a minute: rewriting every busy key's
    row every flush would be most of the flush's work in Postgres. Keys may be given
    as text: the flusher has them so, and turning thousands of them into ``uuid.UUID``
    (and days into dates) each second would cost the event loop.

    One transaction, in statements of a hundred rows, spread evenly over at most
    ``spread`` seconds (and at most 15 ms apart): Postgres does the same work, in
    slices, and the cores it shares with the gateway serve requests in between.
    Thousands of rows in one statement, or in a few back to back, were the gateway's
    worst latency on a machine where both run.
    """
    # One lock order for every flusher, across all the statements: two that write the
    # same rows (a lease that ran out mid-flush) wait for each other, never deadlock.
    rows = sorted(zip(map(str, key_ids), days, counts, strict=True))
    ids = list(dict.fromkeys(row[0] for row in rows))  # sorted already
    statements = -(-len(rows) // _ROWS_PER_STATEMENT) + -(-len(ids) // _KEYS_PER_UPDATE)
    pause = min(_MAX_PAUSE_S, spread / statements) if statements else 0.0
    async with conn.transaction():
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            if start:
                await asyncio.sleep(pause)
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            await conn.execute(
                """
                INSERT INTO usage (api_key_id, usage_date, image_count, counted_at)
                SELECT d.api_key_id, DATE '1970-01-01' + d.day, d.image_count, $4
                FROM unnest($1::uuid[], $2::int[], $3::int[])
                    AS d(api_key_id, day, image_count)
                JOIN api_keys k ON k.id = d.api_key_id
                ORDER BY d.api_key_id, d.day
                ON CONFLICT (api_key_id, usage_date) DO UPDATE
                    SET image_count = EXCLUDED.image_count, counted_at = EXCLUDED.counted_at
                    WHERE usage.counted_at <= EXCLUDED.counted_at
                """,
                [row[0] for row in chunk],
                [row[1] for row in chunk],
                [row[2] for row in chunk],
                counted_at,
            )
        for start in range(0, len(ids), _KEYS_PER_UPDATE):
            await asyncio.sleep(pause)
            await conn.execute(
                """
                UPDATE api_keys SET last_used_at = $2
                WHERE id = ANY($1::uuid[])
                  AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')
                """,
                ids[start : start + _KEYS_PER_UPDATE],
                counted_at,
            )


async def usage_of_user(
    conn: Any,
    user_id: uuid.UUID,
    start: dt.date,
    end: dt.date,
    key_id: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    """Rows ``(usage_date, api_key_id, image_count)`` of the user's keys, oldest first."""
    rows = await conn.fetch(
        """
        SELECT u.usage_date, u.api_key_id, u.image_count
        FROM usage u JOIN api_keys k ON k.id = u.api_key_id
        WHERE k.user_id = $1 AND u.usage_date BETWEEN $2 AND $3
          AND ($4::uuid IS NULL OR u.api_key_id = $4)
        ORDER BY u.usage_date, u.api_key_id
        """,
        user_id,
        start,
        end,
        key_id,
    )
    return [dict(r) for r in rows]


async def usage_by_key_for_day(conn: Any, date: dt.date) -> list[dict[str, Any]]:
    """Every key with usage on ``date``, with its owner: ``api_key_id, user_id, email, images``."""
    rows = await conn.fetch(
        """
        SELECT u.api_key_id, k.user_id, us.email, u.image_count AS images
        FROM usage u
        JOIN api_keys k ON k.id = u.api_key_id
        JOIN users us ON us.id = k.user_id
        WHERE u.usage_date = $1
        ORDER BY k.user_id, u.api_key_id
        """,
        date,
    )
    return [dict(r) for r in rows]


async def usage_by_key_for_range(
    conn: Any, start: dt.date, end: dt.date, user_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Every key with usage from ``start`` to ``end`` (of ``user_id`` when given), with its
    owner, most images first: ``api_key_id, user_id, email, images``."""
    rows = await conn.fetch(
        """
        SELECT u.api_key_id, k.user_id, us.email, sum(u.image_count)::bigint AS images
        FROM usage u
        JOIN api_keys k ON k.id = u.api_key_id
        JOIN users us ON us.id = k.user_id
        WHERE u.usage_date BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR k.user_id = $3)
        GROUP BY u.api_key_id, k.user_id, us.email
        HAVING sum(u.image_count) > 0
        ORDER BY images DESC, u.api_key_id
        """,
        start,
        end,
        user_id,
    )
    return [dict(r) for r in rows]


async def usage_rows_between(
    conn: Any, start: dt.date, end: dt.date, *, batch: int = 1000
) -> AsyncIterator[list[Any]]:
    """Every key's images and credits per UTC day from ``start`` to ``end``, in batches of
    rows ``(user_id, email, api_key_id, usage_date, images, credits)``, by user, key and
    day. A server-side cursor: memory holds one batch, however long the range. Credits
    are what the day's charges and refunds of the key came to. Call inside a transaction.
    """
    cursor = await conn.cursor(
        """
        WITH spent AS (
            SELECT api_key_id, (created_at AT TIME ZONE 'UTC')::date AS day,
                   -SUM(amount) AS credits
            FROM credit_ledger
            WHERE kind IN ('charge', 'refund') AND api_key_id IS NOT NULL
              AND created_at >= $1::date::timestamp AT TIME ZONE 'UTC'
              AND created_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'
            GROUP BY 1, 2
        )
        SELECT k.user_id, us.email, u.api_key_id, u.usage_date, u.image_count AS images,
               COALESCE(s.credits, 0)::bigint AS credits
        FROM usage u
        JOIN api_keys k ON k.id = u.api_key_id
        JOIN users us ON us.id = k.user_id
        LEFT JOIN spent s ON s.api_key_id = u.api_key_id AND s.day = u.usage_date
        WHERE u.usage_date BETWEEN $1 AND $2
        ORDER BY k.user_id, u.api_key_id, u.usage_date
        """,
        start,
        end,
    )
    while rows := await cursor.fetch(batch):
        yield rows
