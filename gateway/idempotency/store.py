"""Where idempotency keys and the answers they stand for live: one Redis hash per user
and key, taken and answered by two scripts (one round trip each).

The first request takes the key (``begin.lua``: atomically, so two racing requests on
two processes cannot both take it), runs, and records its answer (``finish.lua``) for
``idempotency.ttl_hours``; an answer not worth keeping (5xx, 409, 429) frees the key so
a retry runs again. A key whose request never finishes (its process died) frees itself
after ``idempotency.in_flight_seconds``.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.redis.layout import idempotency_entry
from gateway.redis.lua import load_script

__all__ = ["Answer", "Holder", "IdempotencyStore", "fingerprint"]


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests the same request: method, path and the body's digest."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{method} {path} {digest}"


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer kept for a key."""

    status: int
    headers: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a key already: the request it was taken for, and its answer once done."""

    fingerprint: str
    answer: Answer | None


class IdempotencyStore:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        ttl_seconds: float,
        in_flight_seconds: float,
        timeout: float,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = max(1, int(ttl_seconds))
        self._in_flight = max(1, int(in_flight_seconds))
        self._timeout = timeout
        self._begin = load_script(redis, "begin", "gateway.idempotency")
        self._finish = load_script(redis, "finish", "gateway.idempotency")

    def _entry(self, user_id: str, key: str) -> str:
        return idempotency_entry(self._prefix, user_id, hashlib.sha256(key.encode()).hexdigest())

    async def begin(self, user_id: str, key: str, request: str, token: str) -> Holder | None:
        """Take ``key`` for the request ``request`` (its :func:`fingerprint`); None when
        taken, else who holds it. Raises Redis errors."""
        async with asyncio.timeout(self._timeout):
            found = await self._begin(
                keys=(self._entry(user_id, key),), args=(request, token, self._in_flight)
            )
        if not found:
            return None
        held, state, status, headers, body = found
        answer = None
        if state == b"done":
            answer = Answer(int(status), headers or b"{}", body or b"")
        return Holder(held.decode() if held else "", answer)

    async def finish(self, user_id: str, key: str, token: str, answer: Answer | None) -> None:
        """Keep ``answer`` for ``key`` (None: free the key). Raises Redis errors."""
        args: tuple[str | bytes | int, ...] = (token, "", "", "", self._ttl)
        if answer is not None:
            args = (token, answer.status, answer.headers, answer.body, self._ttl)
        async with asyncio.timeout(self._timeout):
            await self._finish(keys=(self._entry(user_id, key),), args=args)
