"""Password-reset links: stored by the SHA-256 of their token, used once."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

__all__ = ["insert_reset", "reset_is_open", "take_reset"]


async def insert_reset(
    conn: Any, user_id: uuid.UUID, token_hash: str, expires_at: dt.datetime
) -> None:
    await conn.execute(
        "INSERT INTO password_resets (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        token_hash,
        user_id,
        expires_at,
    )


async def reset_is_open(conn: Any, token_hash: str, now: dt.datetime) -> bool:
    """Whether the link is unused and not expired at ``now`` (without using it)."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM password_resets "
            "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            token_hash,
            now,
        )
    )


async def take_reset(conn: Any, token_hash: str, now: dt.datetime) -> uuid.UUID | None:
    """Use the link up if it is unused and not expired at ``now``: its user's id, else
    None. The user's other open links are used up with it."""
    user_id: uuid.UUID | None = await conn.fetchval(
        """
        UPDATE password_resets SET used_at = $2
        WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
        RETURNING user_id
        """,
        token_hash,
        now,
    )
    if user_id is not None:
        await conn.execute(
            "UPDATE password_resets SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
            user_id,
            now,
        )
    return user_id
