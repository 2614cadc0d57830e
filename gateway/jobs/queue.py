"""The job queue: a Redis stream read through one consumer group by every process.

Delivery is at least once: an entry stays in the group's pending list until it is
acknowledged, and an entry whose consumer went quiet for the visibility timeout is
claimed by another (XAUTOCLAIM). The stream only says *which* job to look at; whether
to run it is decided by the job's row in Postgres (:func:`gateway.jobs.store.claim_job`),
so a duplicate entry, or a claim of a job that is still running, does no harm.

If Redis loses the stream (a restart without persistence), the group is missing: the
first process to create it again puts every unfinished job back from Postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = ["GROUP", "JobQueue"]

GROUP = "workers"


class JobQueue:
    def __init__(
        self,
        redis: Redis,
        stream: str,
        *,
        timeout: float,
        rebuild: Callable[[], Awaitable[list[str]]],
    ) -> None:
        """``redis`` has no socket timeout of its own (blocking reads); every call is
        bounded by ``timeout`` here. ``rebuild`` lists the jobs to queue again when the
        group had to be made anew."""
        self._redis = redis
        self.stream = stream
        #: Every call's bound, in seconds (a blocking read: plus its block).
        self.timeout = timeout
        self._rebuild = rebuild

    async def ensure_group(self) -> bool:
        """Create the consumer group (and the stream) if missing; True if it was, in
        which case the unfinished jobs have been queued again."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        for job_id in await self._rebuild():
            await self.enqueue(job_id)
        return True

    async def enqueue(self, job_id: str) -> None:
        async with asyncio.timeout(self.timeout):
            await self._redis.xadd(self.stream, {"job": job_id})

    async def read(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, str]]:
        """Up to ``count`` new entries ``(entry id, job id)``, waiting up to ``block_ms``."""
        try:
            async with asyncio.timeout(self.timeout + block_ms / 1000):
                reply = await self._redis.xreadgroup(
                    GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
                )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # Redis lost the queue: rebuilt from Postgres
            return []
        entries: list[tuple[str, str]] = []
        streams: Any = reply or []  # RESP2: [[stream, [(id, fields), ...]], ...]
        for _stream, messages in streams:
            entries.extend(_entry(entry_id, fields) for entry_id, fields in messages)
        return entries

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[tuple[str, str]]:
        """Up to ``count`` entries pending for over ``min_idle_ms`` (their consumer went
        quiet), now this consumer's."""
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._redis.xautoclaim(
                    self.stream, GROUP, consumer, min_idle_ms, start_id="0-0", count=count
                )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [_entry(entry_id, fields) for entry_id, fields in reply[1] if fields]

    async def ack(self, entry_id: str) -> None:
        """Done with an entry: acknowledged and removed from the stream."""
        async with asyncio.timeout(self.timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, entry_id)
                pipe.xdel(self.stream, entry_id)
                await pipe.execute()

    async def requeue(self, entry_id: str, job_id: str) -> None:
        """Give an entry back: a new one for the same job, for any consumer to read now,
        and the old one done with (in one transaction)."""
        async with asyncio.timeout(self.timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.stream, {"job": job_id})
                pipe.xack(self.stream, GROUP, entry_id)
                pipe.xdel(self.stream, entry_id)
                await pipe.execute()

    async def depth(self) -> int:
        """Entries in the stream: queued, or taken and not yet done."""
        async with asyncio.timeout(self.timeout):
            return int(await self._redis.xlen(self.stream))


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> tuple[str, str]:
    raw_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return raw_id, fields[b"job"].decode()
