"""The hot path's Redis client on a Redis Cluster: CPU per admission-sized call.

Sends the same one-key script through :class:`gateway.redis.routed.RoutedRedis` (one
pipelined connection per primary) and through redis-py's ``RedisCluster`` (a pooled
connection per command), 100 calls in flight, keys spread over the gateway's 16 shard
tags, and prints calls per second and CPU microseconds per call for each:

    python -m bench.cluster_client redis+cluster://127.0.0.1:7000,127.0.0.1:7001

The gateway's end-to-end benchmark (``make bench``) runs on one Redis; this is the
measurement behind the cluster client being hand-written (see its docstring).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url

from gateway.config.urls import cluster_nodes
from gateway.redis.routed import RoutedRedis

__all__ = ["main"]

_SCRIPT = "return redis.call('INCR', KEYS[1])"


async def _measure(label: str, call: Callable[[str], Awaitable[object]], n: int) -> None:
    keys = iter([f"bench:{{s{i % 16}}}:calls" for i in range(n)])

    async def client() -> None:
        for key in keys:
            await call(key)

    await call("bench:{s0}:calls")  # connected, script loaded
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(100)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<28} {n / wall:8.0f} calls/s {cpu / n * 1e6:7.1f} us CPU per call")


async def _run(url: str, n: int) -> None:
    urls = cluster_nodes(url)
    routed = RoutedRedis(urls, timeout=5)
    script = routed.script(_SCRIPT)
    await _measure("RoutedRedis (pipelined)", lambda key: script(keys=(key,), args=()), n)
    await routed.aclose()
    nodes = [ClusterNode(str(o["host"]), int(o["port"])) for o in map(parse_url, urls)]
    pooled = RedisCluster(startup_nodes=nodes)
    registered = pooled.register_script(_SCRIPT)
    await _measure("redis-py RedisCluster", lambda key: registered(keys=[key]), n)
    await pooled.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="redis+cluster://host:port,...")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(_run(args.url, args.calls))


if __name__ == "__main__":
    main()
