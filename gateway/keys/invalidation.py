"""Making a key change reach every gateway process from outside one (the CLI)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gateway.keys.cache import SECOND_INVALIDATION_DELAY, publish_invalidation

__all__ = ["invalidate_everywhere"]


async def invalidate_everywhere(redis: Redis, redis_prefix: str, key_hashes: list[str]) -> None:
    """Drop the keys from Redis and every process's memory; again a moment later, past
    any lookup that read the old row just before the change (as
    :meth:`~gateway.keys.cache.KeyCache.invalidate` does in a gateway)."""
    if not key_hashes:
        return
    await publish_invalidation(redis, redis_prefix, key_hashes)
    await asyncio.sleep(SECOND_INVALIDATION_DELAY)
    await publish_invalidation(redis, redis_prefix, key_hashes)
