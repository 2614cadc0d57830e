"""Signing up and logging in, as the account API and the console both do them.

Callers count the attempt against the client IP's budget first (:func:`throttle_ip`),
before they even read the request's body; :func:`authenticate` then applies the
account's own throttle (:class:`LoginGuard`'s growing delays after failures).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway import errors
from gateway.db.pool import connection
from gateway.db.users import create_user, login_record
from gateway.http.validate import has_control_characters
from gateway.services import Services

__all__ = ["authenticate", "sign_up", "throttle_ip"]


async def throttle_ip(services: Services, action: str, client_ip: str) -> None:
    """Count a ``"login"`` or ``"register"`` attempt of an IP; raises past its budget."""
    auth = services.config.auth
    limit = auth.login_per_minute_per_ip if action == "login" else auth.register_per_minute_per_ip
    await services.ip_throttle.hit(action, client_ip, limit)


async def sign_up(services: Services, email: str, password: str) -> dict[str, Any]:
    """Create a user of the default plan: its row (``id, email, plan, ...``).

    ``email`` must be normalised already. Raises :class:`~gateway.errors.EmailTaken`
    for a known email.
    """
    password_hash = await services.passwords.hash(password)
    async with connection(services.pool) as conn:
        try:
            return await create_user(conn, email, services.config.default_plan, password_hash)
        except asyncpg.UniqueViolationError:
            raise errors.EmailTaken() from None


async def authenticate(services: Services, email: str, password: str) -> tuple[str, int]:
    """The id of the user these credentials name, as text, and the user's token
    generation (what access tokens issued now carry).

    Raises :class:`~gateway.errors.RateLimitExceeded` (the account's delay after
    failures), :class:`~gateway.errors.InvalidCredentials`, and
    :class:`~gateway.errors.AccountDisabled` (only to whoever knows the password).
    """
    email = email.strip().lower()
    if has_control_characters(email) or len(email) > 254:
        raise errors.InvalidCredentials()  # no such account can exist
    await services.login_guard.check(email)
    async with connection(services.pool) as conn:
        user = await login_record(conn, email)
    stored = user["password_hash"] if user is not None else None
    if not await services.passwords.verify(password, stored):
        await services.login_guard.failed(email)
        raise errors.InvalidCredentials()
    assert user is not None  # verify() is False without a stored hash
    await services.login_guard.succeeded(email)
    if not user["is_active"]:
        raise errors.AccountDisabled("This account is disabled.")
    return str(user["id"]), user["token_generation"]
