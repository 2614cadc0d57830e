"""Pub/sub that works the same on one Redis and on a Redis Cluster.

On one Redis: ``PUBLISH`` and ``SUBSCRIBE``. On a Redis Cluster: sharded pub/sub,
``SPUBLISH`` and ``SSUBSCRIBE``: a channel lives on the node that owns its hash slot
(and follows it across migrations and failovers), instead of every message crossing
every node of the cluster as classic pub/sub's do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster

__all__ = ["in_cluster", "publish", "subscribed"]

#: What :func:`subscribed` yields: the next message's data within the seconds given,
#: or None.
NextMessage = Callable[[float], Awaitable[bytes | None]]


def in_cluster(redis: Redis | Pipeline) -> bool:
    """Whether ``redis`` (a client or a pipeline) speaks to a Redis Cluster."""
    return isinstance(redis, RedisCluster) or type(redis).__name__ == "ClusterPipeline"


def publish(redis: Redis | Pipeline, channel: str, message: str) -> Any:
    """Publish ``message`` (awaitable on a client; queued on a pipeline)."""
    if in_cluster(redis):
        return redis.spublish(channel, message)
    return redis.publish(channel, message)


@contextlib.asynccontextmanager
async def subscribed(redis: Redis, channel: str) -> AsyncIterator[NextMessage]:
    """Subscribed to ``channel`` while the block runs; raises Redis errors (the
    caller subscribes again)."""
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        if in_cluster(redis):
            await pubsub.ssubscribe(channel)

            async def next_sharded(wait_seconds: float) -> bytes | None:
                message = await pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=wait_seconds
                )
                if message is not None and message.get("type") == "smessage":
                    return bytes(message["data"])
                return None

            yield next_sharded
        else:
            await pubsub.subscribe(channel)

            async def next_message(wait_seconds: float) -> bytes | None:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=wait_seconds
                )
                if message is not None and message.get("type") == "message":
                    return bytes(message["data"])
                return None

            yield next_message
