"""Changing a password, and one-time password-reset links.

A reset link carries a random token; only its SHA-256 is stored, with an expiry an
hour on (:data:`RESET_TTL`). Using it sets the new password, uses up every open link of
the user, and ends every access token issued before, in one transaction. Both a change
and a reset end the user's access tokens (:mod:`gateway.accounts.sessions`).

Functions take an asyncpg connection and the time (``now``) from their caller, so an
HTTP handler, the console and the CLI share them and tests can pin the clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.accounts.mail import Mailer
from gateway.accounts.passwords import PasswordHasher
from gateway.accounts.throttle import LoginGuard
from gateway.db import resets as db_resets
from gateway.db import users as db_users

__all__ = [
    "RESET_PATH",
    "RESET_TTL",
    "ResetLink",
    "change_password",
    "create_reset_link",
    "mail_reset_link",
    "reset_password",
]

RESET_TTL = dt.timedelta(hours=1)
#: The console's page that takes the token and asks for the new password.
RESET_PATH = "/console/reset"


@dataclass(frozen=True, slots=True)
class ResetLink:
    #: ``<email.public_url>/console/reset?token=...`` (a path when public_url is empty).
    url: str
    token: str
    expires_at: dt.datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_reset_link(
    conn: Any, user_id: uuid.UUID, *, now: dt.datetime, public_url: str = ""
) -> ResetLink:
    """A new one-time link for the user (older open links stay good until used or due)."""
    token = secrets.token_urlsafe(32)
    expires_at = now + RESET_TTL
    await db_resets.insert_reset(conn, user_id, _digest(token), expires_at)
    query = urllib.parse.urlencode({"token": token})
    return ResetLink(f"{public_url.rstrip('/')}{RESET_PATH}?{query}", token, expires_at)


async def reset_password(
    conn: Any, hasher: PasswordHasher, token: str, password: str, *, now: dt.datetime
) -> uuid.UUID:
    """Set the password of the link's user; the user's id.

    The link is looked at before the password is hashed (bcrypt's cost is spent only on
    a link that works), and used up atomically after.

    Raises:
        InvalidResetToken: the link is unknown, used or expired at ``now``.
    """
    if not await db_resets.reset_is_open(conn, _digest(token), now):
        raise errors.InvalidResetToken()
    password_hash = await hasher.hash(password)
    async with conn.transaction():
        user_id = await db_resets.take_reset(conn, _digest(token), now)
        if user_id is None or await db_users.set_password(conn, user_id, password_hash) is None:
            raise errors.InvalidResetToken()
    return user_id


async def change_password(
    conn: Any,
    hasher: PasswordHasher,
    user: dict[str, Any],
    current: str,
    new: str,
    *,
    guard: LoginGuard | None = None,
) -> int:
    """Change a signed-in user's password: the new token generation (every access token
    issued before, the caller's included, no longer works).

    Wrong guesses of ``current`` count as failed logins of the account (``guard``), so a
    stolen token does not open a way around the login throttle.

    Raises:
        WrongPassword: ``current`` is not the password (or the user has none).
        RateLimitExceeded: too many failures; wait ``Retry-After``.
    """
    email = user["email"]
    if guard is not None:
        await guard.check(email)
    stored = await db_users.password_of(conn, user["id"])
    if not await hasher.verify(current, stored):
        if guard is not None:
            await guard.failed(email)
        raise errors.WrongPassword(param="current_password")
    if guard is not None:
        await guard.succeeded(email)
    generation = await db_users.set_password(conn, user["id"], await hasher.hash(new))
    if generation is None:
        raise errors.InvalidToken("The account of this token no longer exists.")
    return generation


async def mail_reset_link(mailer: Mailer, email: str, link: ResetLink) -> None:
    """Send the link to the user; raises :class:`~gateway.accounts.mail.MailError`."""
    minutes = int(RESET_TTL.total_seconds() // 60)
    await mailer.send(
        email,
        "Reset your password",
        "Someone (we hope you) asked to set a new password for this account.\n\n"
        f"Open this link within {minutes} minutes to choose it:\n\n{link.url}\n\n"
        "The link works once. If you did not ask for it, ignore this message: your "
        "password stays as it is.\n",
    )
