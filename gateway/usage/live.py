"""Today's live counts, read from Redis (ahead of Postgres by up to one flush)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from gateway.redis.layout import RedisLayout

__all__ = ["live_counts", "live_usage"]


async def live_counts(
    redis: Redis, layout: RedisLayout, keys: Sequence[tuple[str, str]], day: int
) -> dict[str, int]:
    """The counter of each key, given as ``(user id, key id)`` (a key's counter lives in its
    user's shard), that has one for ``day``, by key id (keys without one are left out)."""
    if not keys:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for user_id, key_id in keys:
            pipe.get(layout.counter(user_id, key_id, day))
        values = await pipe.execute()
    return {key_id: int(v) for (_, key_id), v in zip(keys, values, strict=True) if v is not None}


async def live_usage(
    redis: Redis, layout: RedisLayout, keys: Sequence[tuple[str, str]], day: int
) -> dict[str, list[tuple[str, int, int]]]:
    """Each key's ``(label, images, credits)`` for ``day`` by model and backend, as Redis
    has them, for the keys (given as ``(user id, key id)``) that have them."""
    if not keys:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for user_id, key_id in keys:
            pipe.hgetall(layout.usage(user_id, key_id, day))
        hashes = await pipe.execute()
    live: dict[str, list[tuple[str, int, int]]] = {}
    for (_, key_id), fields in zip(keys, hashes, strict=True):
        if not fields:
            continue
        text = {name.decode(): int(value) for name, value in fields.items()}
        live[key_id] = [
            (name[2:], images, text.get("c:" + name[2:], 0))
            for name, images in text.items()
            if name.startswith("i:")
        ]
    return live
