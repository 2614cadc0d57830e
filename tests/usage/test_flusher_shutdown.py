"""The usage flusher stops when cancelled, even if a Redis call swallowed the cancel."""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as redis

from gateway.redis.layout import RedisLayout
from gateway.usage.flusher import UsageFlusher
from tests.support.config import REDIS_URL


class SwallowingFlusher(UsageFlusher):
    """A flush during which the cancellation lands and is absorbed, as redis-py may do
    when it lands inside a read (the read goes on and returns normally)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.flushing = asyncio.Event()

    async def flush(self) -> bool:
        self.flushing.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed: the flush "completes"
            await asyncio.sleep(3600)
        return False


async def test_a_cancel_absorbed_during_a_flush_still_stops_the_flusher():
    client = redis.Redis.from_url(REDIS_URL)
    flusher = SwallowingFlusher(
        redis=client,
        pool=None,
        layout=RedisLayout("gwtest-shutdown:"),
        admission=None,  # type: ignore[arg-type]
        interval=0.001,
        clock=time.monotonic,
    )
    task = asyncio.create_task(flusher.run())
    await flusher.flushing.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done, "the flusher went on after it was cancelled"
    assert task.cancelled()
    await client.aclose()
