"""Who is calling the account endpoints: the user named by a Bearer access token.

A token is refused (401) when it is forged or expired, logged out (the denylist in
Redis), or of an earlier token generation than its user's (a password was changed or
reset since it was issued): see :mod:`gateway.accounts.sessions`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.accounts.tokens import AccessClaims
from gateway.db.pool import connection
from gateway.db.users import get_user
from gateway.services import Services

__all__ = ["Session", "authenticate", "bearer_token", "current_user"]


@dataclass(frozen=True, slots=True)
class Session:
    """A verified access token and its user's row."""

    token: str
    claims: AccessClaims
    user: dict[str, Any]


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.InvalidToken()
    return token.strip()


async def authenticate(request: web.Request, services: Services) -> Session:
    """The caller's token and user; 401 for a bad or revoked token, 403 for a disabled
    account."""
    token = bearer_token(request)
    claims = services.tokens.claims(token)
    try:
        user_id = uuid.UUID(claims.user_id)
    except ValueError:
        raise errors.InvalidToken() from None
    if await services.denylist.is_revoked(token):
        raise errors.InvalidToken("The token was revoked (logged out). Log in again.")
    async with connection(services.pool) as conn:
        user = await get_user(conn, user_id)
    if user is None:
        raise errors.InvalidToken("The account of this token no longer exists.")
    if claims.generation != user["token_generation"]:
        raise errors.InvalidToken("The password was changed since this token was issued.")
    if not user["is_active"]:
        raise errors.AccountDisabled("This account is disabled.")
    return Session(token, claims, user)


async def current_user(request: web.Request, services: Services) -> dict[str, Any]:
    """The caller's user row; 401 for a bad token, 403 for a disabled account."""
    return (await authenticate(request, services)).user
