"""Images per key over a range of UTC days, today's live counts included, for operators."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from redis.asyncio import Redis

from gateway.db.usage import day_of_date, usage_by_key_for_range
from gateway.redis.layout import RedisLayout
from gateway.usage.live import live_counts

__all__ = ["usage_by_key"]


async def usage_by_key(
    conn: Any,
    redis: Redis,
    layout: RedisLayout,
    start: dt.date,
    end: dt.date,
    *,
    today: dt.date,
    user_id: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    """Rows ``api_key_id, user_id, email, images`` of the keys with images in the range
    (of ``user_id``'s keys when given), most images first.

    Days before today are Postgres's; today is Redis's live counter where a key has
    one (Postgres lags it by up to one flush), else what Postgres has.
    """
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    last_past = min(end, today - dt.timedelta(days=1))
    if start <= last_past:
        for row in await usage_by_key_for_range(conn, start, last_past, user_id):
            rows[row["api_key_id"]] = row
    if start <= today <= end:
        keys = await conn.fetch(
            """
            SELECT k.id, k.user_id, u.email FROM api_keys k JOIN users u ON u.id = k.user_id
            WHERE $1::uuid IS NULL OR k.user_id = $1
            """,
            user_id,
        )
        stored = {
            row["api_key_id"]: row["images"]
            for row in await usage_by_key_for_range(conn, today, today, user_id)
        }
        owners = [(str(k["user_id"]), str(k["id"])) for k in keys]
        live = await live_counts(redis, layout, owners, day_of_date(today))
        for key in keys:
            images = live.get(str(key["id"]), stored.get(key["id"], 0))
            if not images:
                continue
            row = rows.setdefault(
                key["id"],
                {"api_key_id": key["id"], "user_id": key["user_id"], "email": key["email"]},
            )
            row["images"] = row.get("images", 0) + images
    return sorted(rows.values(), key=lambda r: (-r["images"], str(r["api_key_id"])))
