"""Account operations the console uses that belong to :mod:`gateway.accounts`.

Each function here is the one place the console reaches an account feature that the
account API is to own (a token denylist, password changes and reset links, the audit
log's listing). Where that feature exists, the function calls it; where it does not yet,
the function does the least that keeps the console honest, and says so. When the account
module grows the feature, only the body of the function here changes.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway import errors
from gateway.db.directory import audit_entries
from gateway.db.pool import connection
from gateway.services import Services

__all__ = [
    "ResetUnavailable",
    "change_password",
    "list_audit",
    "redeem_reset_token",
    "revoke_session_token",
    "session_token_revoked",
]


class ResetUnavailable(errors.GatewayError):
    status, code, type = 404, "password_reset_unavailable", "invalid_request_error"
    default_message = "Password reset links are not available on this gateway yet."


async def revoke_session_token(services: Services, token: str) -> None:
    """Make ``token`` useless before its expiry (logout).

    Not yet possible: access tokens have no denylist. Logging out deletes the cookie;
    the token itself lapses after ``auth.token_ttl_seconds``.
    """


async def session_token_revoked(services: Services, token: str) -> bool:
    """Whether ``token`` was revoked (logout, a password change). Never, until the denylist."""
    return False


async def change_password(services: Services, user_id: uuid.UUID, current: str, new: str) -> None:
    """Set a user's password, given the current one.

    Raises :class:`~gateway.errors.InvalidCredentials` when ``current`` is wrong. (The
    account module's version is also to revoke the user's other tokens.)
    """
    async with connection(services.pool) as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
        if not await services.passwords.verify(current, stored):
            raise errors.InvalidCredentials("The current password is not right.")
        new_hash = await services.passwords.hash(new)
        await conn.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            user_id,
            new_hash,
        )


async def redeem_reset_token(services: Services, token: str, new_password: str) -> None:
    """Set the password of the user a one-time reset link names, and spend the link.

    Raises :class:`ResetUnavailable`: reset links do not exist yet.
    """
    raise ResetUnavailable()


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
