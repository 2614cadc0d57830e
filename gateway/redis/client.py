"""The redis-py client the gateway's slower paths use (the hot path has its own)."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import RedisConfig
from gateway.config.urls import cluster_nodes
from gateway.redis.pipelined import HotRedis, PipelinedRedis
from gateway.redis.routed import RoutedRedis

__all__ = ["create_hot_redis", "create_redis"]


def create_redis(config: RedisConfig, *, hot_path: bool = False) -> Redis:
    """A client whose pool waits for a free connection instead of failing.

    A command that finds its pooled connection dead (Redis restarted) reconnects and
    is sent once more. Only connection errors are retried, never timeouts: a timed-out
    admission script may have run, and running it again would count twice.

    ``hot_path``: no socket timeout in the client (redis-py wraps every send in a new
    task for it); its callers bound each call with ``asyncio.timeout`` instead.

    On a Redis Cluster (``config.in_cluster``) it is redis-py's ``RedisCluster``: the
    same commands, each sent to the node owning its key's slot (MOVED, ASK and
    failovers followed). Typed as ``Redis`` because callers use only the commands both
    have; what differs (pub/sub) goes through :mod:`gateway.redis.channels`.
    """
    if config.in_cluster:
        return cast(Redis, _cluster(config, hot_path=hot_path))
    pool = BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.max_connections,
        timeout=config.socket_timeout_seconds,
        socket_timeout=None if hot_path else config.socket_timeout_seconds,
        socket_connect_timeout=config.socket_timeout_seconds,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return Redis(connection_pool=pool)


class _Cluster(RedisCluster):
    """``RedisCluster`` retrying what it retries (after reading the topology again: a
    failover, a node gone) except timeouts, as :func:`create_redis` does on one Redis:
    a script that timed out may have run."""

    # (redis-py types it as its own four-tuple; three of them, without TimeoutError.)
    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]


def _cluster(config: RedisConfig, *, hot_path: bool) -> RedisCluster:
    urls = cluster_nodes(config.url)
    first: dict[str, Any] = dict(parse_url(urls[0]))
    nodes = [ClusterNode(str(o["host"]), int(o["port"])) for o in map(parse_url, urls)]
    for option in ("host", "port", "db", "path", "connection_class"):
        first.pop(option, None)
    return _Cluster(
        startup_nodes=nodes,
        ssl=urls[0].startswith("rediss://"),
        max_connections=config.max_connections,
        socket_timeout=None if hot_path else config.socket_timeout_seconds,
        socket_connect_timeout=config.socket_timeout_seconds,
        **first,
    )


def create_hot_redis(config: RedisConfig) -> HotRedis:
    """The hot path's pipelined client: one connection, or one per primary of a cluster."""
    if config.in_cluster:
        return RoutedRedis(cluster_nodes(config.url), timeout=config.socket_timeout_seconds)
    return PipelinedRedis(config.url, timeout=config.socket_timeout_seconds)
