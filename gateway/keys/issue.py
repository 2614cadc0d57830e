"""Issuing and revoking keys: shared by the CLI and the account API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from gateway.db import keys as db
from gateway.keys.format import display_prefix, generate_key, hash_key

__all__ = ["issue_key"]


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
