"""Brute-force protection for the account endpoints.

* :class:`IpThrottle` — attempts per client IP in any rolling 60 seconds.
* :class:`LoginGuard` — failed logins per account: after ``failures_before_delay``
  failures, each attempt must wait 1 s, then 2 s, 4 s ... up to ``max_delay``, until a
  login succeeds (or an hour passes with no failure).

Both raise :class:`~gateway.errors.RateLimitExceeded` with ``Retry-After``. Account
emails appear in Redis only as hashes.
"""

from __future__ import annotations

import hashlib
import math
import secrets

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import RateLimitExceeded, ServiceUnavailable
from gateway.redis.layout import throttle_prefix
from gateway.redis.lua import load_script

__all__ = ["IpThrottle", "LoginGuard"]

_WINDOW_MS = 60_000
_FAILURE_MEMORY_SECONDS = 3600


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Sign-in is unavailable for a moment. Please retry shortly.")


def _too_many(retry_seconds: float, what: str) -> RateLimitExceeded:
    retry = max(1, math.ceil(retry_seconds))
    return RateLimitExceeded(
        f"Too many {what}. Retry after {retry} s.", headers={"Retry-After": str(retry)}
    )


class IpThrottle:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._script = load_script(redis, "throttle", package="gateway.accounts")
        self._prefix = throttle_prefix(prefix)

    async def hit(self, action: str, client_ip: str, limit: int) -> None:
        """Count one attempt; raises when the IP is over ``limit`` per minute."""
        key = f"{self._prefix}{action}:{client_ip}"
        try:
            wait_ms = int(
                await self._script(keys=(key,), args=(limit, _WINDOW_MS, secrets.token_hex(8)))
            )
        except RedisError as exc:  # no throttle, no account endpoints: fail closed
            raise _unavailable() from exc
        if wait_ms:
            raise _too_many(wait_ms / 1000, f"{action} attempts from this address")


class LoginGuard:
    def __init__(
        self, redis: Redis, prefix: str, failures_before_delay: int, max_delay: int
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}login:"
        self._threshold = failures_before_delay
        self._max_delay = max_delay

    def _keys(self, email: str) -> tuple[str, str]:
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        # One hash tag: the two are deleted together (one slot on a Redis Cluster).
        return f"{self._prefix}failures:{{{digest}}}", f"{self._prefix}wait:{{{digest}}}"

    async def check(self, email: str) -> None:
        """Raise if this account must still wait before another attempt."""
        _, wait = self._keys(email)
        try:
            left_ms = int(await self._redis.pttl(wait))
        except RedisError as exc:
            raise _unavailable() from exc
        if left_ms > 0:
            raise _too_many(left_ms / 1000, "failed logins for this account")

    async def failed(self, email: str) -> None:
        failures_key, wait = self._keys(email)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(failures_key)
                pipe.expire(failures_key, _FAILURE_MEMORY_SECONDS)
                failures = int((await pipe.execute())[0])
            if failures >= self._threshold:
                delay = min(2 ** (failures - self._threshold), self._max_delay)
                await self._redis.set(wait, "1", ex=delay)
        except RedisError as exc:
            raise _unavailable() from exc

    async def succeeded(self, email: str) -> None:
        try:
            await self._redis.delete(*self._keys(email))
        except RedisError as exc:
            raise _unavailable() from exc
