"""Queries on the usage table."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from gateway.usage.labels import split_label, usage_label

__all__ = [
    "EPOCH",
    "ModelUsage",
    "count_for_day",
    "date_of_day",
    "day_of_date",
    "usage_by_key_for_day",
    "usage_by_key_for_range",
    "usage_by_model_between",
    "usage_by_model_for_day",
    "usage_of_user",
    "usage_rows_between",
    "write_counts",
    "write_usage_by_model",
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


async def usage_by_model_for_day(
    conn: Any, key_id: uuid.UUID, date: dt.date
) -> list[tuple[str, int, int]]:
    """The day's ``(label, images, credits)`` of the key, by model and backend."""
    rows = await conn.fetch(
        """
        SELECT model, backend, image_count, credits FROM usage_by_model
        WHERE api_key_id = $1 AND usage_date = $2
        """,
        key_id,
        date,
    )
    return [(usage_label(r[0], r[1]), int(r[2]), int(r[3])) for r in rows]


async def usage_by_model_between(
    conn: Any,
    start: dt.date,
    end: dt.date,
    *,
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Rows ``(usage_date, api_key_id, user_id, email, model, backend, images, credits)``
    from ``start`` to ``end`` (of one user, key or model when given), by day, key,
    model and backend. Rows with nothing left in them (all given back) are left out."""
    rows = await conn.fetch(
        """
        SELECT u.usage_date, u.api_key_id, k.user_id, us.email, u.model, u.backend,
               u.image_count AS images, u.credits
        FROM usage_by_model u
        JOIN api_keys k ON k.id = u.api_key_id
        JOIN users us ON us.id = k.user_id
        WHERE u.usage_date BETWEEN $1 AND $2
          AND ($3::uuid IS NULL OR k.user_id = $3)
          AND ($4::uuid IS NULL OR u.api_key_id = $4)
          AND ($5::text IS NULL OR u.model = $5)
          AND (u.image_count > 0 OR u.credits > 0)
        ORDER BY u.usage_date, u.api_key_id, u.model, u.backend
        """,
        start,
        end,
        user_id,
        key_id,
        model,
    )
    return [dict(r) for r in rows]


#: One (key id, UTC day, label) of a flush, with its images and credits.
ModelUsage = tuple[str, int, str, int, int]


async def write_usage_by_model(
    conn: Any, rows: Sequence[ModelUsage], counted_at: dt.datetime
) -> None:
    """Set each (key, day, model, backend) row to its absolute images and credits, read
    at ``counted_at``, like :func:`write_counts` (idempotent; an older reading never
    overwrites a newer one; rows of deleted keys skipped). Call it in the transaction
    that writes the day's counts."""
    # Labels that name the same model and backend (``""`` and ``"\x1f"``) make one row:
    # one statement cannot write a row twice.
    summed: dict[tuple[str, int, str, str], list[int]] = {}
    for key_id, day, label, images, credits in rows:
        row = summed.setdefault((key_id, day, *split_label(label)), [0, 0])
        row[0] += images
        row[1] += credits
    flat = sorted((*slot, *totals) for slot, totals in summed.items())  # one lock order
    for start in range(0, len(flat), _ROWS_PER_STATEMENT):
        chunk = flat[start : start + _ROWS_PER_STATEMENT]
        await conn.execute(
            """
            INSERT INTO usage_by_model
                (api_key_id, usage_date, model, backend, image_count, credits, counted_at)
            SELECT d.api_key_id, DATE '1970-01-01' + d.day, d.model, d.backend, d.images,
                   d.credits, $7
            FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::int[], $6::bigint[])
                AS d(api_key_id, day, model, backend, images, credits)
            JOIN api_keys k ON k.id = d.api_key_id
            ORDER BY d.api_key_id, d.day, d.model, d.backend
            ON CONFLICT (api_key_id, usage_date, model, backend) DO UPDATE
                SET image_count = EXCLUDED.image_count, credits = EXCLUDED.credits,
                    counted_at = EXCLUDED.counted_at
                WHERE usage_by_model.counted_at <= EXCLUDED.counted_at
            """,
            [row[0] for row in chunk],
            [row[1] for row in chunk],
            [row[2] for row in chunk],
            [row[3] for row in chunk],
            [row[4] for row in chunk],
            [row[5] for row in chunk],
            counted_at,
        )


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
    """Every key's images and credits per UTC day, model and backend from ``start`` to
    ``end``, in batches of rows ``(user_id, email, api_key_id, usage_date, model, backend,
    images, credits)``, by user, key, day, model and backend. A server-side cursor:
    memory holds one batch, however long the range. Credits are those charged for the
    images delivered. Call inside a transaction.
    """
    cursor = await conn.cursor(
        """
        SELECT k.user_id, us.email, u.api_key_id, u.usage_date, u.model, u.backend,
               u.image_count AS images, u.credits
        FROM usage_by_model u
        JOIN api_keys k ON k.id = u.api_key_id
        JOIN users us ON us.id = k.user_id
        WHERE u.usage_date BETWEEN $1 AND $2 AND (u.image_count > 0 OR u.credits > 0)
        ORDER BY k.user_id, u.api_key_id, u.usage_date, u.model, u.backend
        """,
        start,
        end,
    )
    while rows := await cursor.fetch(batch):
        yield rows
