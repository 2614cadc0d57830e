"""Ending access tokens before they expire.

* One token (``POST /v1/auth/logout``): its SHA-256 goes on a denylist in Redis until
  the token would have expired anyway, so the list never outgrows the live tokens.
* All of a user's tokens (a password change or reset): the user's token generation
  moves on (:func:`gateway.db.users.set_password`); a token names the generation it was
  issued under, and one of an earlier generation is refused.

Both are checked where access tokens are verified
(:func:`gateway.http.token_auth.authenticate`): one Redis ``EXISTS``, and a column of the
user row that is read anyway.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import ServiceUnavailable
from gateway.redis.layout import denied_token_entry

__all__ = ["TokenDenylist"]

#: Kept past the token's expiry by the leeway its verification allows.
_LEEWAY_SECONDS = 5


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Sign-in is unavailable for a moment. Please retry shortly.")


class TokenDenylist:
    def __init__(self, redis: Redis, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock

    def _entry(self, token: str) -> str:
        return denied_token_entry(self._prefix, hashlib.sha256(token.encode()).hexdigest())

    async def revoke(self, token: str, expires_at: int) -> None:
        """Refuse ``token`` from now on (it expires at ``expires_at``, unix seconds)."""
        ttl = expires_at + _LEEWAY_SECONDS - int(self._clock())
        if ttl <= 0:
            return  # expired already: refused anyway
        try:
            await self._redis.set(self._entry(token), b"1", ex=ttl)
        except RedisError as exc:
            raise _unavailable() from exc

    async def is_revoked(self, token: str) -> bool:
        """Whether ``token`` was logged out. Without Redis, nobody is let in (503)."""
        try:
            return bool(await self._redis.exists(self._entry(token)))
        except RedisError as exc:
            raise _unavailable() from exc
