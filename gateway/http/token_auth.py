"""Who is calling the account endpoints: the user named by a Bearer access token."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.db.pool import connection
from gateway.db.users import get_user
from gateway.services import Services

__all__ = ["bearer_token", "current_user"]


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.InvalidToken()
    return token.strip()


async def current_user(request: web.Request, services: Services) -> dict[str, Any]:
    """The caller's user row; 401 for a bad token, 403 for a disabled account."""
    subject = services.tokens.verify(bearer_token(request))
    try:
        user_id = uuid.UUID(subject)
    except ValueError:
        raise errors.InvalidToken() from None
    async with connection(services.pool) as conn:
        user = await get_user(conn, user_id)
    if user is None:
        raise errors.InvalidToken("The account of this token no longer exists.")
    if not user["is_active"]:
        raise errors.AccountDisabled("This account is disabled.")
    return user
