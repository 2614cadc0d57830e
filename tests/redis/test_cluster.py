"""The gateway on a Redis Cluster: three primaries, three replicas, started for the run."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio
from redis.crc import key_slot

from gateway.config.urls import cluster_nodes
from gateway.redis.layout import SHARDS, RedisLayout
from gateway.redis.routed import RoutedRedis
from tests.support.config import ADMIN_TOKEN, merge
from tests.support.credits import CREDITS, remaining
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import bearer
from tests.support.jobs import JOBS, submit, wait_for_job
from tests.support.processes import post, running_gateway
from tests.support.redis_cluster import LocalCluster
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.usage import today, usage_rows
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


#: A plan's limits that a test's load never meets.
UNLIMITED = {"requests_per_minute": 100_000, "images_per_day": 100_000}


def on_cluster(cluster: LocalCluster, raw_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``raw_config`` on the cluster, in a key namespace of the test's own."""
    prefix = f"{raw_config['redis']['key_prefix']}{secrets.token_hex(4)}:"
    return merge(raw_config, merge({"redis": {"url": cluster.url, "key_prefix": prefix}}, extra))


def shard_key(config: dict[str, Any], user_id: object) -> str:
    """A Redis key in the hash slot of the user's counters and balance."""
    layout = RedisLayout(config["redis"]["key_prefix"])
    return f"{layout.tag(layout.shard_of(str(user_id)))}x"


async def test_two_processes_on_a_cluster_keep_exact_limits_and_see_revocations(
    redis_cluster: LocalCluster,
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    db: asyncpg.Connection,
):
    config = on_cluster(redis_cluster, raw_config, usage={"flush_interval_seconds": 0.3})
    limited = await make_key("pro", requests_per_minute=40, images_per_day=100_000)
    quota = await make_key("pro", requests_per_minute=100_000, images_per_day=60)
    async with AsyncExitStack() as stack:
        urls = [
            (await stack.enter_async_context(running_gateway(tmp_path, config)))[0]
            for _ in range(2)
        ]
        session = await stack.enter_async_context(aiohttp.ClientSession())

        statuses = await asyncio.gather(
            *(post(session, urls[i % 2], limited.key) for i in range(300))
        )
        assert (statuses.count(200), statuses.count(429)) == (40, 260)
        statuses = await asyncio.gather(
            *(post(session, urls[i % 2], quota.key, n=2) for i in range(100))
        )
        assert (statuses.count(200), statuses.count(429)) == (30, 70)

        async def flushed() -> bool:
            return await usage_rows(db, limited.key_id) == {today(): 40} and await usage_rows(
                db, quota.key_id
            ) == {today(): 60}

        await eventually(flushed)

        # Revoked through one process, refused by the other within a second.
        warm = await make_key("pro")
        for url in urls:
            assert await post(session, url, warm.key) == 200
        async with session.patch(
            f"{urls[0]}/admin/keys/{warm.key_id}",
            json={"is_active": False},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            assert response.status == 200

        async def refused() -> bool:
            return await post(session, urls[1], warm.key) == 401

        assert await eventually(refused) < 1.0


async def test_warm_key_on_a_cluster_costs_one_round_trip_and_no_postgres(
    redis_cluster: LocalCluster,
    raw_config: dict[str, Any],
    make_gateway: MakeGateway,
    make_key: MakeKey,
    database_url: str,
):
    config = on_cluster(redis_cluster, raw_config)
    gateway = await make_gateway({"redis": config["redis"]})
    key = await make_key("pro")
    assert (await gateway.generate(key.key)).status == 200  # warm: cached, counter seeded

    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    locker = await asyncpg.connect(database_url)
    clients = [redis.asyncio.Redis(port=port) for port in primaries]
    marker = f"end-{secrets.token_hex(4)}"
    commands: list[str] = []
    # The test's own connections, open before the monitors start (no handshake counted).
    await asyncio.gather(*(c.ping() for c in clients for _ in range(2)))
    try:
        async with locker.transaction(), AsyncExitStack() as monitors:
            await locker.execute(
                "LOCK TABLE users, api_keys, usage IN ACCESS EXCLUSIVE MODE NOWAIT"
            )
            listeners = []
            for client in clients:
                monitor = await monitors.enter_async_context(client.monitor())
                listeners.append(monitor.listen())
                await client.echo("start")
            for _ in range(5):
                response = await asyncio.wait_for(gateway.generate(key.key), 5)
                assert response.status == 200
            for client, listener in zip(clients, listeners, strict=True):
                await client.echo(marker)
                async for event in listener:
                    if marker in event["command"]:
                        break
                    if event.get("client_type") != "lua" and "ECHO" not in event["command"]:
                        commands.append(event["command"].split()[0].upper())
    finally:
        for client in clients:
            await client.aclose()
        await locker.close()
    assert commands == ["EVALSHA"] * 5


class Load:
    """Generation requests sent back to back by a few clients until stopped."""

    def __init__(self, gateway: Gateway, key: str, clients: int = 4) -> None:
        self.statuses: list[int] = []
        self._gateway, self._key = gateway, key
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        while not self._stop.is_set():
            response = await self._gateway.generate(self._key)
            await response.read()
            self.statuses.append(response.status)

    async def stop(self) -> list[int]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.statuses


async def images_used(gateway: Gateway, key: str, quota: int) -> int:
    """The images counted today, as one more request (counted too) reports them."""
    response = await gateway.generate(key)
    assert response.status == 200
    return quota - int(response.headers["x-ratelimit-remaining-images"])


async def test_a_primary_killed_under_load_fails_over_keeping_the_quota(
    redis_cluster: LocalCluster,
    raw_config: dict[str, Any],
    make_gateway: MakeGateway,
    make_key: MakeKey,
    db: asyncpg.Connection,
):
    config = on_cluster(redis_cluster, raw_config)
    gateway = await make_gateway({"redis": config["redis"]})
    quota = 100_000
    key = await make_key("pro", requests_per_minute=100_000, images_per_day=quota)
    for _ in range(20):
        assert (await gateway.generate(key.key)).status == 200
    primary = redis_cluster.primary_of(shard_key(config, key.user_id))
    await asyncio.to_thread(redis_cluster.wait_replicated, primary)
    before = await images_used(gateway, key.key, quota)
    assert before == 21

    load = Load(gateway, key.key)
    await eventually(lambda: _at_least(load.statuses, 20))
    redis_cluster.kill(primary)
    try:
        await asyncio.to_thread(redis_cluster.wait_until_ok, without=primary)  # replica took over

        async def serving() -> bool:
            return (await gateway.generate(key.key)).status == 200

        assert await eventually(serving, timeout=5.0) < 2.0
        statuses = await load.stop()
    finally:
        await load.stop()
        await asyncio.to_thread(redis_cluster.restart, primary)
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) > 20

    # Not reset: what was counted before the failover still is; and it all reaches Postgres.
    await gateway.flush()
    flushed = (await usage_rows(db, key.key_id))[today()]
    assert flushed >= before
    assert await images_used(gateway, key.key, quota) == flushed + 1


async def _at_least(statuses: list[int], count: int) -> bool:
    return len(statuses) >= count


async def test_slots_migrated_under_load_reach_no_client_as_errors(
    redis_cluster: LocalCluster,
    raw_config: dict[str, Any],
    make_gateway: MakeGateway,
    make_key: MakeKey,
):
    # A user whose shard's slot comes early among its primary's slots, so that moving a
    # few slots (redis-cli moves a node's first ones) moves it. Shards' slots depend on
    # the shard alone ("{s<N>}"), not on the key prefix.
    config = on_cluster(redis_cluster, raw_config)
    layout = RedisLayout(config["redis"]["key_prefix"])
    owned = {port: redis_cluster.slots_of(port) for port in redis_cluster.primaries()}
    owner = {slot: port for port, slots in owned.items() for slot in slots}
    slot_of = {shard: key_slot(layout.tag(shard).encode()) for shard in range(SHARDS)}
    shard = min(slot_of, key=lambda s: owned[owner[slot_of[s]]].index(slot_of[s]))
    slot, source = slot_of[shard], owner[slot_of[shard]]
    while layout.shard_of(str((key := await make_key("pro", **UNLIMITED)).user_id)) != shard:
        pass
    target = next(port for port in redis_cluster.primaries() if port != source)
    gateway = await make_gateway({"redis": config["redis"]})
    assert (await gateway.generate(key.key)).status == 200

    load = Load(gateway, key.key)
    await eventually(lambda: _at_least(load.statuses, 20))
    try:
        await asyncio.to_thread(
            redis_cluster.reshard, source, target, owned[source].index(slot) + 1
        )
        assert redis_cluster.primary_of(shard_key(config, key.user_id)) == target
        moved_at = len(load.statuses)
        await eventually(lambda: _at_least(load.statuses, moved_at + 20))
    finally:
        statuses = await load.stop()
    assert set(statuses) == {200}


async def test_the_hot_path_client_follows_ask_and_moved_and_loads_scripts_where_needed(
    redis_cluster: LocalCluster,
):
    """A slot migrated by hand, step by step: the client's calls follow ``ASK`` to the
    importing node (loading the script there), then ``MOVED`` once the slot has moved."""
    tag = f"{{t{secrets.token_hex(4)}}}"
    slot = key_slot(tag.encode())
    source = redis_cluster.primary_of(tag)
    target = next(port for port in redis_cluster.primaries() if port != source)
    client = RoutedRedis(cluster_nodes(redis_cluster.url), timeout=5)
    count = client.script("return redis.call('INCR', KEYS[1])")
    try:
        assert await count(keys=(f"{tag}:a",), args=()) == 1
        # Importing and migrating: a key not on the source any more is asked of the target.
        for port, state, other in ((target, "IMPORTING", source), (source, "MIGRATING", target)):
            node = redis.asyncio.Redis(port=port)
            await node.execute_command(
                "CLUSTER", "SETSLOT", slot, state, redis_cluster.node_id(other)
            )
            await node.aclose()
        assert await count(keys=(f"{tag}:b",), args=()) == 1  # ASK: run on the target
        assert await count(keys=(f"{tag}:a",), args=()) == 2  # still on the source
        # The slot's keys moved, and the slot with them: MOVED, then straight to the target.
        source_node = redis.asyncio.Redis(port=source)
        await source_node.execute_command(
            "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", f"{tag}:a"
        )
        for port in redis_cluster.primaries():
            node = redis.asyncio.Redis(port=port)
            await node.execute_command(
                "CLUSTER", "SETSLOT", slot, "NODE", redis_cluster.node_id(target)
            )
            await node.aclose()
        assert await count(keys=(f"{tag}:a",), args=()) == 3
        target_node = redis.asyncio.Redis(port=target)
        assert await target_node.mget(f"{tag}:a", f"{tag}:b") == [b"3", b"1"]
        await source_node.aclose()
        await target_node.aclose()
    finally:
        await client.aclose()
    await asyncio.to_thread(redis_cluster.wait_until_ok)


async def test_credits_jobs_cancels_and_idempotency_on_a_cluster(
    redis_cluster: LocalCluster,
    raw_config: dict[str, Any],
    make_gateway: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    extra = merge(
        merge(CREDITS, upstream_config(fake_upstream)),
        {"redis": on_cluster(redis_cluster, raw_config)["redis"]},
    )
    worker = await make_gateway(extra)
    front = await make_gateway(merge(extra, {"jobs": {"work": False}}))

    # Credits: checked and charged in the one admission script, in the user's slot.
    metered = await make_key("metered")
    for left in (9, 8):
        response = await front.generate(metered.key)
        assert response.status == 200
        assert remaining(response) == left

    # Idempotency: the same request again is answered from Redis.
    key = await make_key("pro")
    headers = {**bearer(key.key), "Idempotency-Key": "order-1"}
    body = {"prompt": "a lighthouse", "size": "256x256"}
    first = await front.client.post("/v1/images/generations", json=body, headers=headers)
    again = await front.client.post("/v1/images/generations", json=body, headers=headers)
    assert (first.status, again.status) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.read() == await first.read()

    # Jobs: queued by one process on the stream, worked by the other.
    job = await (await submit(front.client, key.key, n=2)).json()
    assert (await wait_for_job(front.client, key.key, job["id"]))["status"] == "succeeded"

    # A cancel published by one process stops the job the other runs.
    fake_upstream.mode = "hang"
    job = await (await submit(front.client, key.key, model="remote")).json()
    runner = worker.services.jobs
    assert runner is not None

    async def running() -> bool:
        return job["id"] in runner.running

    await eventually(running, timeout=10)
    response = await front.client.post(f"{JOBS}/{job['id']}/cancel", headers=bearer(key.key))
    assert (await response.json())["status"] == "canceled"

    async def stopped() -> bool:
        return job["id"] not in runner.running

    await eventually(stopped)
    fake_upstream.release.set()
    await worker.flush()
    assert await usage_rows(db, key.key_id) == {today(): 3}  # the canceled job: nothing
