"""Admission: the rate limit, the daily image quota and the usage reservation, in one step.

The limits are exact across any number of gateway processes because every check and
every update happens inside one Redis script (one round trip):

* **Rate limit** — a rolling window: no more than ``requests_per_minute`` requests are
  admitted in *any* 60 seconds (a sorted-set log of admission times per key, pruned
  as it goes; memory is O(limit) per key). There is no burst allowance beyond the limit
  and no doubling at window edges, unlike fixed windows.
* **Daily quota** — images per UTC day; a request for ``n`` images is admitted only if
  all ``n`` fit. A refused request changes nothing.
* **Reservation** — the ``n`` images are counted at admission; :meth:`Admission.release`
  gives back what the upstream did not deliver.

Redis keys share a hash tag per shard (``<prefix>{s<N>}:...``), so every script only
touches one hash slot and runs unchanged on a Redis Cluster. The shard also holds the
set of counters the usage flusher has not yet written to Postgres.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.keys.cache import KeyRecord
from gateway.scripts import load_script

if TYPE_CHECKING:
    from gateway.limits.local import LocalAdmission

__all__ = [
    "ADMITTED",
    "NEEDS_SEED",
    "OVER_QUOTA",
    "RATE_LIMITED",
    "SHARDS",
    "Admission",
    "Decision",
    "RedisLayout",
    "SeedSource",
]

log = logging.getLogger(__name__)

NEEDS_SEED, ADMITTED, RATE_LIMITED, OVER_QUOTA = 0, 1, 2, 3

#: Number of hash-tag shards. Fixed: every process must agree on it.
SHARDS = 16


class RedisLayout:
    """Names of the Redis keys the limiter and the usage flusher share."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._tags = [f"{prefix}{{s{shard}}}:" for shard in range(SHARDS)]

    @staticmethod
    def shard_of(key_id: str) -> int:
        return int(key_id[:8], 16) % SHARDS

    def tag(self, shard: int) -> str:
        return self._tags[shard]

    def counter_prefix(self, shard: int) -> str:
        return f"{self._tags[shard]}img:"

    def counter(self, key_id: str, day: int) -> str:
        return f"{self.counter_prefix(self.shard_of(key_id))}{key_id}:{day}"

    def pending(self, shard: int) -> str:
        return f"{self._tags[shard]}pending"

    def lease(self, shard: int) -> str:
        return f"{self._tags[shard]}flush-lease"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one admission, with what the rate-limit headers report."""

    outcome: int
    day: int
    requests_limit: int
    requests_in_window: int
    #: Seconds until the oldest request in the window leaves it (room for one more).
    requests_reset: float
    images_limit: int
    images_used: int
    #: Seconds until the next UTC midnight, when the daily quota starts afresh.
    images_reset: int
    #: Decided in this process because Redis was unreachable (``redis.on_failure: open``).
    local: bool = False

    @property
    def requests_remaining(self) -> int:
        return max(0, self.requests_limit - self.requests_in_window)

    @property
    def images_remaining(self) -> int:
        return max(0, self.images_limit - self.images_used)


class SeedSource(Protocol):
    """Where a day's count comes from when Redis does not have it (Postgres)."""

    async def count_for(self, key_id: str, day: int) -> int: ...


class Admission:
    def __init__(
        self,
        redis: Redis,
        layout: RedisLayout,
        seeds: SeedSource,
        clock: Callable[[], float] | None = None,
        fallback: LocalAdmission | None = None,
        timeout: float = 2.0,
    ) -> None:
        """``clock`` (seconds since the epoch) replaces Redis's clock; for tests only.

        ``fallback`` decides instead while Redis is unreachable (``redis.on_failure:
        open``); without one, a Redis error propagates and the caller fails closed.
        """
        self._clock = clock
        self._fallback = fallback
        self._timeout = timeout
        self._layout = layout
        self._seeds = seeds
        self._admit = load_script(redis, "admit")
        self._release = load_script(redis, "release")
        #: Releases that could not reach Redis, retried by :meth:`retry_unsent`.
        self.unsent: list[tuple[str, int, int]] = []

    async def admit(self, record: KeyRecord, n: int, request_id: str) -> Decision:
        """Check both limits and, only if both pass, record the request and reserve ``n``.

        One Redis round trip, except on a key's first request of a UTC day after Redis
        lost its counter (or on a new day), when today's count is first read from
        Postgres. Raises Redis errors as they come (the caller fails closed).
        """
        layout = self._layout
        key_id = record.key_id
        shard = layout.shard_of(key_id)
        tag = layout.tag(shard)
        keys = (f"{tag}rl:{key_id}", f"{tag}img:{key_id}:", f"{tag}pending")
        # The log's member must be unique even if a client reuses its request id.
        member = f"{request_id}:{uuid.uuid4().hex[:8]}"
        now = "" if self._clock is None else int(self._clock() * 1_000_000)
        args: list[Any] = [
            record.requests_per_minute,
            record.images_per_day,
            n,
            member,
            key_id,
            "",
            "",
            now,
        ]
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._admit(keys=keys, args=args)
        except (RedisError, TimeoutError):
            if self._fallback is None:
                raise
            decision = await self._fallback.admit(record, n)
            return dataclasses.replace(decision, local=True)
        if raw[0] == NEEDS_SEED:
            day = int(raw[1])
            args[5] = await self._seeds.count_for(key_id, day)
            args[6] = day
            async with asyncio.timeout(self._timeout):
                raw = await self._admit(keys=keys, args=args)
            if raw[0] == NEEDS_SEED:  # the UTC day turned between the two calls
                args[5], args[6] = 0, int(raw[1])
                async with asyncio.timeout(self._timeout):
                    raw = await self._admit(keys=keys, args=args)
        outcome, day, in_window, reset_us, used, to_midnight = (int(v) for v in raw)
        return Decision(
            outcome=outcome,
            day=day,
            requests_limit=record.requests_per_minute,
            requests_in_window=in_window,
            requests_reset=reset_us / 1_000_000,
            images_limit=record.images_per_day,
            images_used=used,
            images_reset=to_midnight,
        )

    async def release(self, key_id: str, day: int, images: int, *, local: bool = False) -> None:
        """Give back ``images`` reserved on ``day`` that were not delivered.

        Never raises: when Redis cannot be reached the release is kept and retried by
        :meth:`retry_unsent` (the usage flusher calls it every interval).
        """
        if images <= 0:
            return
        if local and self._fallback is not None:
            self._fallback.release(key_id, day, images)
            return
        try:
            await self._send_release(key_id, day, images)
        except Exception as exc:
            log.warning(
                "could not release %d images of key %s (%s); will retry", images, key_id, exc
            )
            self.unsent.append((key_id, day, images))

    async def _send_release(self, key_id: str, day: int, images: int) -> None:
        shard = self._layout.shard_of(key_id)
        async with asyncio.timeout(self._timeout):
            await self._release(
                keys=(self._layout.counter(key_id, day), self._layout.pending(shard)),
                args=(images, f"{key_id}:{day}"),
            )

    async def retry_unsent(self) -> None:
        """Send what could not reach Redis earlier: releases, and counts admitted locally.

        Raises (keeping the rest) if Redis still fails.
        """
        if self._fallback is not None and self._fallback.unsynced:
            await self._fallback.reconcile()
        while self.unsent:
            key_id, day, images = self.unsent[0]
            await self._send_release(key_id, day, images)
            self.unsent.pop(0)
