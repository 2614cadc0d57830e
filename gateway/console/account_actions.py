"""The account operations the console performs, in :mod:`gateway.accounts`' terms.

The console's pages work on the same account functions as the JSON API (log out onto
the token denylist, password changes that end earlier sessions, one-time reset links)
and hold no account logic of their own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from gateway import errors
from gateway.accounts import recovery
from gateway.db.directory import audit_entries
from gateway.db.pool import connection
from gateway.services import Services

__all__ = [
    "change_password",
    "list_audit",
    "redeem_reset_token",
    "revoke_session_token",
    "session_token_revoked",
]


async def revoke_session_token(services: Services, token: str) -> None:
    """Make ``token`` useless before its expiry (log out): it joins the denylist."""
    try:
        claims = services.tokens.claims(token)
    except errors.InvalidToken:
        return  # expired or not ours: refused anyway
    await services.denylist.revoke(token, claims.expires_at)


async def session_token_revoked(services: Services, token: str) -> bool:
    """Whether ``token`` was logged out."""
    return await services.denylist.is_revoked(token)


async def change_password(services: Services, user: dict[str, Any], current: str, new: str) -> int:
    """Set a user's password, given the current one: the new token generation (every
    earlier session of the user ends).

    Raises :class:`~gateway.errors.WrongPassword` when ``current`` is wrong, and
    :class:`~gateway.errors.RateLimitExceeded` after too many wrong guesses.
    """
    async with connection(services.pool) as conn:
        return await recovery.change_password(
            conn, services.passwords, user, current, new, guard=services.login_guard
        )


async def redeem_reset_token(services: Services, token: str, new_password: str) -> None:
    """Set the password of the user a one-time reset link names, and spend the link.

    Raises :class:`~gateway.errors.InvalidResetToken`: unknown, used or expired.
    """
    now = dt.datetime.fromtimestamp(services.wall_clock(), dt.UTC)
    async with connection(services.pool) as conn:
        await recovery.reset_password(conn, services.passwords, token, new_password, now=now)


async def list_audit(
    services: Services,
    *,
    actor: str | None,
    target: uuid.UUID | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """Admin audit rows, newest first (``id, actor, action, target_id, details, created_at``)."""
    async with connection(services.pool) as conn:
        return await audit_entries(conn, actor=actor, target=target, limit=limit, offset=offset)
