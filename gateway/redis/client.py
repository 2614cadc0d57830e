"""The redis-py client the gateway's slower paths use (the hot path has its own)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import RedisConfig

__all__ = ["create_redis"]


def create_redis(config: RedisConfig, *, hot_path: bool = False) -> Redis:
    """A client whose pool waits for a free connection instead of failing.

    A command that finds its pooled connection dead (Redis restarted) reconnects and
    is sent once more. Only connection errors are retried, never timeouts: a timed-out
    admission script may have run, and running it again would count twice.

    ``hot_path``: no socket timeout in the client (redis-py wraps every send in a new
    task for it); its callers bound each call with ``asyncio.timeout`` instead.
    """
    pool = BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.max_connections,
        timeout=config.socket_timeout_seconds,
        socket_timeout=None if hot_path else config.socket_timeout_seconds,
        socket_connect_timeout=config.socket_timeout_seconds,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return Redis(connection_pool=pool)
