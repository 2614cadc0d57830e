"""The layered key cache: what reaches Redis and Postgres, and how changes propagate."""

from __future__ import annotations

import asyncio
import collections
import secrets
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio

from gateway.db.keys import KeyRow
from gateway.keys.cache import PostgresKeyStore
from gateway.keys.format import generate_key
from tests.support.config import KEY_PREFIX, merge, write_config
from tests.support.credits import CREDITS
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.metrics import metric_total
from tests.support.processes import clean_env, gateway_command
from tests.support.redis import PrivateRedis


class CountingStore(PostgresKeyStore):
    """The real Postgres store, counting the lookups it makes per key hash."""

    lookups: collections.Counter[str]

    def __init__(self, pool: Any, lookups: collections.Counter[str]) -> None:
        super().__init__(pool)
        self.lookups = lookups

    async def fetch(self, key_hash: str) -> KeyRow | None:
        self.lookups[key_hash] += 1
        return await super().fetch(key_hash)


async def test_unknown_key_flood_reaches_postgres_once_per_key(make_gateway: MakeGateway):
    lookups: collections.Counter[str] = collections.Counter()
    first = await make_gateway(key_store=lambda pool: CountingStore(pool, lookups))
    second = await make_gateway(key_store=lambda pool: CountingStore(pool, lookups))
    bogus = [generate_key(KEY_PREFIX) for _ in range(40)]
    flood = [first.generate(key) for key in bogus for _ in range(5)]
    flood += [second.generate(key) for key in bogus for _ in range(5)]
    responses = await asyncio.gather(*flood)
    assert {r.status for r in responses} == {401}
    assert {(await r.json())["error"]["code"] for r in responses} == {"invalid_api_key"}
    assert len(lookups) == 40
    assert max(lookups.values()) == 1  # across both instances: Redis shares the miss
    again = await asyncio.gather(*(first.generate(key) for key in bogus))
    assert {r.status for r in again} == {401}
    assert max(lookups.values()) == 1


async def test_malformed_keys_cause_no_lookup_at_all(make_gateway: MakeGateway):
    lookups: collections.Counter[str] = collections.Counter()
    gateway = await make_gateway(key_store=lambda pool: CountingStore(pool, lookups))
    key = generate_key(KEY_PREFIX)
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    for candidate in (typo, "nb_test_short", "x" * 46):
        assert (await gateway.generate(candidate)).status == 401
    assert not lookups


async def test_concurrent_misses_share_one_lookup(make_gateway: MakeGateway, make_key: MakeKey):
    lookups: collections.Counter[str] = collections.Counter()
    gateway = await make_gateway(key_store=lambda pool: CountingStore(pool, lookups))
    key = await make_key("pro")
    responses = await asyncio.gather(*(gateway.generate(key.key) for _ in range(20)))
    assert {r.status for r in responses} == {200}
    assert list(lookups.values()) == [1]


@pytest.mark.parametrize("plan", ["pro", "metered"])  # metered: with credits
@pytest.mark.parametrize(
    "body", [{}, {"stream": True, "partial_images": 1}], ids=["one-answer", "streamed"]
)
async def test_warm_key_makes_no_postgres_query_and_one_redis_round_trip(
    private_redis: PrivateRedis,
    make_gateway: MakeGateway,
    make_key: MakeKey,
    database_url: str,
    plan: str,
    body: dict[str, object],
):
    gateway = await make_gateway(merge(CREDITS, {"redis": {"url": private_redis.url}}))
    key = await make_key(plan)
    assert (await gateway.generate(key.key)).status == 200  # warm: cached, counter seeded

    locker = await asyncpg.connect(database_url)
    monitor_client = redis.asyncio.Redis.from_url(private_redis.url)
    marker = f"end-{secrets.token_hex(4)}"
    commands: list[str] = []
    # Two connections of the test's own, open before the monitor starts: one for
    # MONITOR, one for the markers (so no handshake of ours shows up in the count).
    await asyncio.gather(monitor_client.ping(), monitor_client.ping())
    try:
        async with locker.transaction():
            # Any query on these tables would now block until the test ends.
            await locker.execute(
                "LOCK TABLE users, api_keys, usage, credit_ledger IN ACCESS EXCLUSIVE MODE NOWAIT"
            )
            async with monitor_client.monitor() as monitor:
                listener = monitor.listen()
                await monitor_client.echo("start")  # the monitor is attached from here on
                for _ in range(5):
                    response = await asyncio.wait_for(gateway.generate(key.key, **body), 5)
                    assert response.status == 200
                    await response.read()
                await monitor_client.echo(marker)
                async for event in listener:
                    if marker in event["command"]:
                        break
                    if event.get("client_type") != "lua" and "ECHO" not in event["command"]:
                        commands.append(event["command"].split()[0].upper())
    finally:
        await monitor_client.aclose()
        await locker.close()
    assert commands == ["EVALSHA"] * 5


async def test_revocation_by_cli_reaches_every_instance(
    make_gateway: MakeGateway, make_key: MakeKey, raw_config: dict[str, Any], tmp_path: Path
):
    first, second = await make_gateway(), await make_gateway()
    key = await make_key("pro")
    for gateway in (first, second):
        assert (await gateway.generate(key.key)).status == 200  # both hold it in memory
        await asyncio.wait_for(gateway.services.keys.subscribed.wait(), 5)
    path = write_config(tmp_path / "config.yaml", raw_config)
    subprocess.run(
        gateway_command("keys", "revoke", str(key.key_id), "--config", str(path)),
        env=clean_env(),
        check=True,
        capture_output=True,
    )
    for gateway in (first, second):
        response = await gateway.generate(key.key)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "api_key_revoked"


async def test_invalidation_drops_other_instances_copies(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    first, second = await make_gateway(), await make_gateway()
    key = await make_key("pro")
    for gateway in (first, second):
        assert (await gateway.generate(key.key)).status == 200
        await asyncio.wait_for(gateway.services.keys.subscribed.wait(), 5)
    key_hash = await db.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", key.key_id)
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", key.user_id)
    await first.services.keys.invalidate([key_hash])
    await wait_for_drop(second, key_hash)
    for gateway in (first, second):
        response = await gateway.generate(key.key)
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "account_disabled"


async def wait_for_drop(gateway: Gateway, key_hash: str) -> None:
    """Wait until the instance has dropped its copy (the pub/sub message arrived)."""
    cache = gateway.services.keys
    for _ in range(500):
        if not cache.holds(key_hash):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the invalidation never arrived")


async def _redis_lookups(gateway: Gateway) -> float:
    """Key lookups Redis answered, as the gateway's ``/metrics`` reports them."""
    text = await (await gateway.client.get("/metrics")).text()
    return metric_total(text, "gateway_key_lookups_total", layer="redis", result="hit")


async def test_keys_loaded_together_are_refreshed_apart_and_never_late(
    make_app: MakeGateway, make_key: MakeKey, raw_config: dict[str, Any]
):
    """Copies made at one instant go stale at different times, so a warm-up or a deploy
    is not followed by every key refreshing at once each TTL, and none is served past
    ``keys.local_ttl_seconds`` without a refresh. Their Redis entries expire apart too."""
    now = [1000.0]
    ttl, redis_ttl = 100.0, 3000.0
    gateway = await make_app(
        {"keys": {"local_ttl_seconds": ttl, "redis_ttl_seconds": redis_ttl}},
        monotonic=lambda: now[0],
    )
    keys = [await make_key("pro") for _ in range(24)]
    cache = gateway.services.keys

    async def refreshes_at(moment: float) -> float:
        now[0] = moment
        before = await _redis_lookups(gateway)
        for key in keys:
            assert (await gateway.generate(key.key)).status == 200
        await asyncio.gather(*cache._tasks)  # the background refreshes those requests began
        return await _redis_lookups(gateway) - before

    assert await refreshes_at(1000.0) == 0  # loaded from Postgres, all at one instant
    prefix = gateway.services.config.redis.key_prefix
    client = redis.asyncio.Redis.from_url(raw_config["redis"]["url"])
    try:
        entries = [k async for k in client.scan_iter(match=f"{prefix}key:*")]
        ttls = [await client.pttl(entry) for entry in entries if b"loading" not in entry]
    finally:
        await client.aclose()
    assert len(ttls) == len(keys)
    assert all(0.8 * redis_ttl * 1000 - 5000 <= t <= redis_ttl * 1000 for t in ttls)
    assert max(ttls) - min(ttls) > 0.05 * redis_ttl * 1000  # not one instant's

    assert await refreshes_at(1000.0 + 0.8 * ttl - 0.1) == 0  # all still fresh
    part = await refreshes_at(1000.0 + 0.9 * ttl)
    assert 0 < part < len(keys)  # some went stale, not all
    assert await refreshes_at(1000.0 + ttl) == len(keys) - part  # the rest, none late
