"""Today's live counts, read from Redis (ahead of Postgres by up to one flush)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from gateway.redis.layout import RedisLayout

__all__ = ["live_counts"]


async def live_counts(
    redis: Redis, layout: RedisLayout, user_id: str, key_ids: Sequence[str], day: int
) -> dict[str, int]:
    """The counter of each of the user's keys that has one for ``day`` (keys without one
    are left out). The counters live in the user's shard."""
    if not key_ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for key_id in key_ids:
            pipe.get(layout.counter(user_id, key_id, day))
        values = await pipe.execute()
    return {key_id: int(v) for key_id, v in zip(key_ids, values, strict=True) if v is not None}
