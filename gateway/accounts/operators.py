"""What operators do to accounts, shared by the admin API, the console and the CLI.

Every change is written to the audit log in the transaction that makes it (``actor``
says who: ``admin-token``, ``cli``, an operator's email) and logged. Changes that the
hot path must see (a plan, a user disabled, a key's limits) are pushed to every gateway
process through ``invalidate``: :meth:`gateway.keys.cache.KeyCache.invalidate` inside a
gateway, :func:`gateway.keys.invalidation.invalidate_everywhere` outside one.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from gateway import errors
from gateway.accounts.recovery import ResetLink, create_reset_link
from gateway.db import keys as db_keys
from gateway.db import users as db_users
from gateway.db.audit import record_admin_change

__all__ = ["Invalidate", "audit", "change_key", "change_user", "create_account", "reset_link"]

log = logging.getLogger("gateway.admin")

#: Forget these key hashes in every gateway process.
Invalidate = Callable[[list[str]], Awaitable[None]]


async def audit(
    conn: Any, actor: str, action: str, target: uuid.UUID, details: dict[str, Any]
) -> None:
    await record_admin_change(conn, actor=actor, action=action, target_id=target, details=details)
    log.warning(
        "admin change: actor=%s action=%s target=%s details=%s",
        actor,
        action,
        target,
        orjson.dumps(details).decode(),
    )


async def create_account(
    conn: Any, *, email: str, plan: str, actor: str, password_hash: str | None = None
) -> dict[str, Any]:
    """A new user (``email`` normalised already).

    Raises:
        EmailTaken: a user with this email exists.
    """
    try:
        async with conn.transaction():
            user = await db_users.create_user(conn, email, plan, password_hash)
            details = {"email": email, "plan": plan, "password": password_hash is not None}
            await audit(conn, actor, "create_user", user["id"], details)
    except asyncpg.UniqueViolationError:
        raise errors.EmailTaken() from None
    return user


async def change_user(
    conn: Any,
    user_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    actor: str,
    invalidate: Invalidate,
) -> dict[str, Any]:
    """Change ``plan`` and/or ``is_active``; the user as it is now.

    Raises:
        NotFound: no such user.
    """
    async with conn.transaction():
        user = await db_users.update_user(conn, user_id, **changes)
        if user is None:
            raise errors.NotFound("No such user.")
        await audit(conn, actor, "update_user", user_id, changes)
        hashes = await db_keys.key_hashes_of_user(conn, user_id)
    await invalidate(hashes)
    return user


async def change_key(
    conn: Any,
    key_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    actor: str,
    invalidate: Invalidate,
) -> dict[str, Any]:
    """Change ``requests_per_minute``, ``images_per_day`` (None: the plan's) and/or
    ``is_active``; the key's row as it is now.

    Raises:
        NotFound: no such key.
    """
    async with conn.transaction():
        if await db_keys.key_for_update(conn, key_id) is None:
            raise errors.NotFound("No such key.")
        row = await db_keys.update_key(conn, key_id, **changes)
        await audit(conn, actor, "update_key", key_id, changes)
    await invalidate([row["key_hash"]])
    return row


async def reset_link(
    conn: Any, user_id: uuid.UUID, *, actor: str, now: dt.datetime, public_url: str
) -> ResetLink:
    """A one-time password-reset link for the user (audited, never the token itself).

    Raises:
        NotFound: no such user.
    """
    async with conn.transaction():
        if await db_users.get_user(conn, user_id) is None:
            raise errors.NotFound("No such user.")
        link = await create_reset_link(conn, user_id, now=now, public_url=public_url)
        expires = link.expires_at.isoformat()
        await audit(conn, actor, "password_reset_link", user_id, {"expires_at": expires})
    return link
