"""Queries on users and API keys."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KeyRow",
    "create_key",
    "create_user",
    "fetch_key_by_hash",
    "find_user_by_email",
    "revoke_key",
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


async def create_user(
    conn: Any, email: str, plan: str, password_hash: str | None = None
) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        INSERT INTO users (email, plan, password_hash) VALUES ($1, $2, $3)
        RETURNING id, email, plan, is_active, created_at
        """,
        email,
        plan,
        password_hash,
    )
    return dict(row)


async def find_user_by_email(conn: Any, email: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, email, plan, is_active, created_at FROM users WHERE email = $1", email
    )
    return dict(row) if row is not None else None


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
        RETURNING id, name, prefix, is_active, created_at, expires_at
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
