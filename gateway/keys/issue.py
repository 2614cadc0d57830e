"""Issuing and revoking keys: shared by the CLI and the account API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from gateway import errors
from gateway.db import keys as db
from gateway.keys.format import display_prefix, generate_key, hash_key

__all__ = ["issue_key", "issue_key_within_cap", "rotate_key"]


async def issue_key(
    conn: Any,
    *,
    user_id: uuid.UUID,
    prefix: str,
    name: str,
    expires_at: dt.datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Create a key for a user: ``(the whole key, its row)``. Only the hash is stored."""
    key = generate_key(prefix)
    row = await db.create_key(
        conn,
        user_id=user_id,
        key_hash=hash_key(key),
        prefix=display_prefix(key, prefix),
        name=name,
        expires_at=expires_at,
    )
    return key, row


async def issue_key_within_cap(
    conn: Any,
    *,
    user_id: uuid.UUID,
    prefix: str,
    name: str,
    max_keys: int,
    expires_at: dt.datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """:func:`issue_key`, unless the user holds ``max_keys`` active keys already.

    Raises:
        TooManyKeys: the user is at the cap.
    """
    async with conn.transaction():
        # One key creation per user at a time, so the cap holds under concurrency.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
        if await db.active_key_count(conn, user_id) >= max_keys:
            raise errors.TooManyKeys(
                f"An account may hold {max_keys} active keys. Revoke one first."
            )
        return await issue_key(
            conn, user_id=user_id, prefix=prefix, name=name, expires_at=expires_at
        )


async def rotate_key(
    conn: Any,
    *,
    key_id: uuid.UUID,
    user_id: uuid.UUID,
    prefix: str,
    grace_seconds: int,
    now: dt.datetime,
) -> tuple[str, dict[str, Any], str]:
    """Replace a key by a new one: ``(the new key, its row, the old key's hash)``.

    The new key keeps the old one's name, limits and expiry (the one its owner asked
    for: a key is rotated once, so that expiry was never cut short by a grace period).
    The old key stops at once, or after ``grace_seconds``. Run inside a transaction.

    Raises:
        NotFound: no such active key of this user.
        KeyAlreadyRotated: the key was rotated before (it has a successor); rotating
            it again would hand out a second successor that dies with the first grace.
    """
    old = await db.key_for_update(conn, key_id)
    if old is None or old["user_id"] != user_id:
        raise errors.NotFound("No such active key.")
    if old["rotated_to"] is not None:
        raise errors.KeyAlreadyRotated(
            "This key was already rotated; rotate its successor instead."
        )
    if not old["is_active"] or (old["expires_at"] is not None and old["expires_at"] <= now):
        raise errors.NotFound("No such active key.")
    key, row = await issue_key(
        conn, user_id=user_id, prefix=prefix, name=old["name"], expires_at=old["expires_at"]
    )
    await db.update_key(
        conn,
        row["id"],
        requests_per_minute=old["requests_per_minute"],
        images_per_day=old["images_per_day"],
    )
    if not grace_seconds:
        await db.update_key(conn, key_id, is_active=False, rotated_to=row["id"])
    else:
        ends = now + dt.timedelta(seconds=grace_seconds)
        if old["expires_at"] is not None and old["expires_at"] <= ends:
            ends = old["expires_at"]
        await db.update_key(conn, key_id, expires_at=ends, rotated_to=row["id"])
    return key, row, old["key_hash"]
