"""Queries on users. Every statement is a literal; values travel only as parameters."""

from __future__ import annotations

import uuid
from typing import Any

__all__ = [
    "UNSET",
    "create_user",
    "find_user_by_email",
    "get_user",
    "list_users",
    "login_record",
    "password_of",
    "set_password",
    "update_user",
]

#: "Leave this column as it is", for partial updates.
UNSET: Any = object()


async def create_user(
    conn: Any, email: str, plan: str, password_hash: str | None = None
) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        INSERT INTO users (email, plan, password_hash) VALUES ($1, $2, $3)
        RETURNING id, email, plan, is_active, created_at, updated_at
        """,
        email,
        plan,
        password_hash,
    )
    return dict(row)


async def find_user_by_email(conn: Any, email: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, email, plan, is_active, created_at, updated_at FROM users WHERE email = $1",
        email,
    )
    return dict(row) if row is not None else None


async def login_record(conn: Any, email: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, password_hash, is_active, token_generation FROM users WHERE email = $1",
        email,
    )
    return dict(row) if row is not None else None


async def get_user(conn: Any, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The user, with ``token_generation`` (the access tokens it honours)."""
    row = await conn.fetchrow(
        """
        SELECT id, email, plan, is_active, created_at, updated_at, token_generation
        FROM users WHERE id = $1
        """,
        user_id,
    )
    return dict(row) if row is not None else None


async def list_users(
    conn: Any,
    limit: int = 100,
    *,
    after: uuid.UUID | None = None,
    email_like: str | None = None,
) -> list[dict[str, Any]] | None:
    """Users oldest first, those after the user ``after`` (None if there is no such user),
    whose email contains ``email_like`` (any case)."""
    if after is not None and not await conn.fetchval("SELECT 1 FROM users WHERE id = $1", after):
        return None
    rows = await conn.fetch(
        """
        SELECT id, email, plan, is_active, created_at, updated_at FROM users
        WHERE ($2::uuid IS NULL
               OR (created_at, id) > (SELECT created_at, id FROM users WHERE id = $2))
          AND ($3::text IS NULL OR strpos(email, lower($3)) > 0)
        ORDER BY created_at, id LIMIT $1
        """,
        limit,
        after,
        email_like,
    )
    return [dict(r) for r in rows]


async def password_of(conn: Any, user_id: uuid.UUID) -> str | None:
    """The user's password hash, locked until the transaction ends (None: no password)."""
    value: str | None = await conn.fetchval(
        "SELECT password_hash FROM users WHERE id = $1 FOR UPDATE", user_id
    )
    return value


async def set_password(conn: Any, user_id: uuid.UUID, password_hash: str) -> int | None:
    """Set the password and end every access token issued so far: the new token
    generation (None if there is no such user)."""
    value: int | None = await conn.fetchval(
        """
        UPDATE users SET password_hash = $2, token_generation = token_generation + 1
        WHERE id = $1 RETURNING token_generation
        """,
        user_id,
        password_hash,
    )
    return value


async def update_user(
    conn: Any, user_id: uuid.UUID, *, plan: Any = UNSET, is_active: Any = UNSET
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """
        UPDATE users SET
            plan = CASE WHEN $2 THEN $3 ELSE plan END,
            is_active = CASE WHEN $4 THEN $5 ELSE is_active END
        WHERE id = $1
        RETURNING id, email, plan, is_active, created_at, updated_at
        """,
        user_id,
        plan is not UNSET,
        None if plan is UNSET else plan,
        is_active is not UNSET,
        None if is_active is UNSET else is_active,
    )
    return dict(row) if row is not None else None
