"""Queries on users and API keys."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.db.users import UNSET

__all__ = [
    "KeyRow",
    "active_key_count",
    "create_key",
    "fetch_key_by_hash",
    "key_hashes_of_user",
    "keys_of_user",
    "keys_with_limits_of_user",
    "revoke_key",
    "update_key",
]


@dataclass(frozen=True, slots=True)
class KeyRow:
    """What the hot path needs to know about a key, joined with its owner."""

    key_id: uuid.UUID
    user_id: uuid.UUID
    plan: str
    key_active: bool
    user_active: bool
    expires_at: dt.datetime | None
    requests_per_minute: int | None
    images_per_day: int | None


async def fetch_key_by_hash(conn: Any, key_hash: str) -> KeyRow | None:
    row = await conn.fetchrow(
        """
        SELECT k.id, k.user_id, u.plan, k.is_active, u.is_active AS user_active,
               k.expires_at, k.requests_per_minute, k.images_per_day
        FROM api_keys k JOIN users u ON u.id = k.user_id
        WHERE k.key_hash = $1
        """,
        key_hash,
    )
    if row is None:
        return None
    return KeyRow(
        key_id=row["id"],
        user_id=row["user_id"],
        plan=row["plan"],
        key_active=row["is_active"],
        user_active=row["user_active"],
        expires_at=row["expires_at"],
        requests_per_minute=row["requests_per_minute"],
        images_per_day=row["images_per_day"],
    )


async def create_key(
    conn: Any,
    *,
    user_id: uuid.UUID,
    key_hash: str,
    prefix: str,
    name: str,
    expires_at: dt.datetime | None = None,
) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        INSERT INTO api_keys (user_id, key_hash, prefix, name, expires_at)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING id, name, prefix, is_active, created_at, last_used_at, expires_at
        """,
        user_id,
        key_hash,
        prefix,
        name,
        expires_at,
    )
    return dict(row)


async def revoke_key(conn: Any, key_id: uuid.UUID) -> str | None:
    """Deactivate a key; its hash (for cache invalidation), or None if there is no such key."""
    value: str | None = await conn.fetchval(
        "UPDATE api_keys SET is_active = false WHERE id = $1 RETURNING key_hash", key_id
    )
    return value


async def keys_of_user(conn: Any, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """What the API shows of a user's keys: never the key, never its hash."""
    rows = await conn.fetch(
        """
        SELECT id, name, prefix, is_active, created_at, last_used_at, expires_at
        FROM api_keys WHERE user_id = $1 ORDER BY created_at, id
        """,
        user_id,
    )
    return [dict(r) for r in rows]


async def keys_with_limits_of_user(conn: Any, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """:func:`keys_of_user` with each key's limit overrides and successor, for operators."""
    rows = await conn.fetch(
        """
        SELECT id, name, prefix, is_active, created_at, last_used_at, expires_at,
               requests_per_minute, images_per_day, rotated_to
        FROM api_keys WHERE user_id = $1 ORDER BY created_at, id
        """,
        user_id,
    )
    return [dict(r) for r in rows]


async def active_key_count(conn: Any, user_id: uuid.UUID) -> int:
    value = await conn.fetchval(
        """
        SELECT count(*) FROM api_keys
        WHERE user_id = $1 AND is_active AND (expires_at IS NULL OR expires_at > now())
        """,
        user_id,
    )
    return int(value)


async def key_hashes_of_user(conn: Any, user_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch("SELECT key_hash FROM api_keys WHERE user_id = $1", user_id)
    return [r["key_hash"] for r in rows]


async def key_for_update(conn: Any, key_id: uuid.UUID) -> dict[str, Any] | None:
    """The whole row, locked until the transaction ends."""
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1 FOR UPDATE", key_id)
    return dict(row) if row is not None else None


async def update_key(
    conn: Any,
    key_id: uuid.UUID,
    *,
    is_active: Any = UNSET,
    expires_at: Any = UNSET,
    requests_per_minute: Any = UNSET,
    images_per_day: Any = UNSET,
    rotated_to: Any = UNSET,
) -> dict[str, Any]:
    """Change some columns of a key (``UNSET`` leaves one as it is; ``None`` clears it)."""
    row = await conn.fetchrow(
        """
        UPDATE api_keys SET
            is_active = CASE WHEN $2 THEN $3 ELSE is_active END,
            expires_at = CASE WHEN $4 THEN $5 ELSE expires_at END,
            requests_per_minute = CASE WHEN $6 THEN $7 ELSE requests_per_minute END,
            images_per_day = CASE WHEN $8 THEN $9 ELSE images_per_day END,
            rotated_to = CASE WHEN $10 THEN $11 ELSE rotated_to END
        WHERE id = $1
        RETURNING id, name, prefix, is_active, created_at, last_used_at, expires_at,
                  user_id, key_hash, requests_per_minute, images_per_day, rotated_to
        """,
        key_id,
        *_change(is_active),
        *_change(expires_at),
        *_change(requests_per_minute),
        *_change(images_per_day),
        *_change(rotated_to),
    )
    return dict(row)


def _change(value: Any) -> tuple[bool, Any]:
    return (False, None) if value is UNSET else (True, value)
