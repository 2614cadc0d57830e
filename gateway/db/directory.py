"""Operator look-ups across all users: search, usage over a range, the audit log.

Every statement is a literal; values travel only as parameters. Paging is by offset:
an operator pages through a few hundred rows at most, where an offset costs nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

__all__ = [
    "audit_entries",
    "key_limits_of_user",
    "search_users",
    "top_keys_between",
    "usage_by_user_between",
]


def _like_pattern(text: str) -> str:
    """``text`` as a literal substring of a LIKE pattern."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_users(
    conn: Any, email_contains: str, *, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Users whose email contains ``email_contains`` (any case), oldest first."""
    rows = await conn.fetch(
        """
        SELECT id, email, plan, is_active, created_at, updated_at FROM users
        WHERE email LIKE $1
        ORDER BY created_at, id LIMIT $2 OFFSET $3
        """,
        _like_pattern(email_contains.lower()),
        limit,
        offset,
    )
    return [dict(r) for r in rows]


async def key_limits_of_user(conn: Any, user_id: uuid.UUID) -> dict[uuid.UUID, dict[str, Any]]:
    """Key id -> its own limits (``requests_per_minute``, ``images_per_day``; None: the plan's)."""
    rows = await conn.fetch(
        "SELECT id, requests_per_minute, images_per_day FROM api_keys WHERE user_id = $1",
        user_id,
    )
    return {r["id"]: dict(r) for r in rows}


async def usage_by_user_between(
    conn: Any, start: dt.date, end: dt.date, *, limit: int, email_like: str | None = None
) -> list[dict[str, Any]]:
    """``user_id, email, images`` for the range, the largest first (of users whose email
    contains ``email_like``, in any case, when given)."""
    rows = await conn.fetch(
        """
        SELECT k.user_id, us.email, sum(u.image_count)::bigint AS images
        FROM usage u
        JOIN api_keys k ON k.id = u.api_key_id
        JOIN users us ON us.id = k.user_id
        WHERE u.usage_date BETWEEN $1 AND $2
          AND ($4::text IS NULL OR strpos(lower(us.email), lower($4)) > 0)
        GROUP BY k.user_id, us.email
        ORDER BY images DESC, us.email LIMIT $3
        """,
        start,
        end,
        limit,
        email_like,
    )
    return [dict(r) for r in rows]


async def top_keys_between(
    conn: Any, start: dt.date, end: dt.date, *, limit: int, email_like: str | None = None
) -> list[dict[str, Any]]:
    """``api_key_id, prefix, name, user_id, email, images`` for the range, largest first
    (of users whose email contains ``email_like``, in any case, when given)."""
    rows = await conn.fetch(
        """
        SELECT u.api_key_id, k.prefix, k.name, k.user_id, us.email,
               sum(u.image_count)::bigint AS images
        FROM usage u
        JOIN api_keys k ON k.id = u.api_key_id
        JOIN users us ON us.id = k.user_id
        WHERE u.usage_date BETWEEN $1 AND $2
          AND ($4::text IS NULL OR strpos(lower(us.email), lower($4)) > 0)
        GROUP BY u.api_key_id, k.prefix, k.name, k.user_id, us.email
        ORDER BY images DESC, u.api_key_id LIMIT $3
        """,
        start,
        end,
        limit,
        email_like,
    )
    return [dict(r) for r in rows]


async def audit_entries(
    conn: Any,
    *,
    actor: str | None,
    target: uuid.UUID | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """Rows of ``admin_audit_log``, newest first, optionally of one actor or target."""
    rows = await conn.fetch(
        """
        SELECT id, actor, action, target_id, details::text AS details, created_at
        FROM admin_audit_log
        WHERE ($1::text IS NULL OR actor = $1) AND ($2::uuid IS NULL OR target_id = $2)
        ORDER BY created_at DESC, id LIMIT $3 OFFSET $4
        """,
        actor,
        target,
        limit,
        offset,
    )
    return [dict(r) for r in rows]
