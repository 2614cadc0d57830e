"""Usage: counted in Redis, written behind to Postgres, never lost, never invented."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from gateway.db.usage import day_of_date, write_counts
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.processes import post, running_gateway
from tests.support.redis import PrivateRedis
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.usage import today, usage_rows


async def test_flush_writes_todays_count_and_last_used(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key()
    for n in (1, 3, 2):
        assert (await gateway.generate(key.key, n=n)).status == 200
    assert await usage_rows(db, key.key_id) == {}  # written behind, not per request
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 6}
    last_used = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.key_id)
    assert last_used is not None
    assert abs((dt.datetime.now(dt.UTC) - last_used).total_seconds()) < 60


async def test_flushing_twice_changes_nothing(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key()
    assert (await gateway.generate(key.key, n=2)).status == 200
    await gateway.flush()
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_an_older_reading_never_overwrites_a_newer_one(make_key: MakeKey, db):
    key = await make_key()
    newer = dt.datetime.now(dt.UTC)
    older = newer - dt.timedelta(seconds=1)
    await write_counts(db, [key.key_id], [day_of_date(today())], [7], newer)
    await write_counts(db, [key.key_id], [day_of_date(today())], [5], older)  # a racing flusher
    assert await usage_rows(db, key.key_id) == {today(): 7}


async def test_graceful_shutdown_flushes(make_gateway: MakeGateway, make_key: MakeKey, db):
    key = await make_key()
    gateway = await make_gateway()  # flush interval: an hour
    assert (await gateway.generate(key.key, n=3)).status == 200
    await gateway.client.close()
    assert await usage_rows(db, key.key_id) == {today(): 3}


async def test_failed_upstream_is_not_charged(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key(images_per_day=10)
    assert (await gateway.generate(key.key, model="remote", n=2)).status == 200
    fake_upstream.mode = "fail"
    for _ in range(3):
        assert (await gateway.generate(key.key, model="remote", n=4)).status == 502
    fake_upstream.mode = "ok"
    response = await gateway.generate(key.key, model="remote", n=1)
    assert response.status == 200
    assert response.headers["x-ratelimit-remaining-images"] == "7"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 3}


async def test_upstream_timeout_is_not_charged(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db
):
    fake_upstream.mode = "hang"
    gateway = await make_gateway(upstream_config(fake_upstream, timeout=0.2))
    key = await make_key()
    assert (await gateway.generate(key.key, model="remote", n=2)).status == 504
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})


async def test_upstream_resetting_connections_is_a_502_and_not_charged(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db
):
    fake_upstream.mode = "reset"
    gateway = await make_gateway(upstream_config(fake_upstream, retries=1))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote", n=2)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_error"
    assert len(fake_upstream.requests) == 2  # a connection error is retried once
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})


async def test_short_delivery_charges_only_what_came_back(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db
):
    fake_upstream.mode = "short"
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key(images_per_day=10)
    response = await gateway.generate(key.key, model="remote", n=3)
    assert response.status == 200
    body = await response.json()
    assert len(body["data"]) == 2
    assert body["usage"] == {"images": 2}
    assert response.headers["x-ratelimit-remaining-images"] == "8"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_client_credentials_never_reach_the_upstream(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    response = await gateway.client.post(
        "/v1/images/generations",
        json={"prompt": "p", "size": "256x256", "model": "remote"},
        headers={"Authorization": f"Bearer {key.key}", "Cookie": "session=secret"},
    )
    assert response.status == 200
    (seen,) = fake_upstream.requests
    assert key.key not in repr(seen)
    assert "Cookie" not in seen["headers"]
    assert "Authorization" not in seen["headers"]


async def test_redis_flushall_keeps_the_quota(
    private_redis: PrivateRedis, make_gateway: MakeGateway, make_key: MakeKey, db
):
    gateway = await make_gateway({"redis": {"url": private_redis.url}})
    key = await make_key(images_per_day=5)
    assert (await gateway.generate(key.key, n=4)).status == 200
    await gateway.flush()
    await gateway.services.redis.flushall()
    refused = await gateway.generate(key.key, n=2)
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "daily_quota_exceeded"
    assert (await gateway.generate(key.key, n=1)).status == 200
    assert (await gateway.generate(key.key, n=1)).status == 429
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 5}


async def test_redis_restart_keeps_the_quota(
    private_redis: PrivateRedis, make_gateway: MakeGateway, make_key: MakeKey
):
    gateway = await make_gateway({"redis": {"url": private_redis.url}})
    key = await make_key(images_per_day=3)
    assert (await gateway.generate(key.key, n=3)).status == 200
    await gateway.flush()
    private_redis.stop()
    private_redis.start()  # no persistence: Redis comes back empty
    assert (await gateway.generate(key.key)).status == 429


async def test_counts_survive_sigkill(
    tmp_path: Path, raw_config: dict[str, Any], make_gateway: MakeGateway, make_key: MakeKey, db
):
    key = await make_key()
    async with running_gateway(tmp_path, raw_config) as (url, process):
        async with aiohttp.ClientSession() as session:
            for n in (2, 3):
                assert await post(session, url, key.key, n=n) == 200
        process.send_signal(signal.SIGKILL)  # no final flush: it flushes hourly
        await asyncio.to_thread(process.wait, 10)
    assert await usage_rows(db, key.key_id) == {}
    survivor = await make_gateway()  # any other process flushes what the dead one admitted
    await survivor.flush()
    assert await usage_rows(db, key.key_id) == {today(): 5}


async def test_last_used_moves_at_most_once_a_minute(make_key: MakeKey, db):
    """A busy key's row is not rewritten by every flush, only when a minute has passed."""
    key = await make_key()
    day = day_of_date(today())
    first = dt.datetime.now(dt.UTC)

    async def last_used() -> dt.datetime:
        return await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.key_id)

    await write_counts(db, [key.key_id], [day], [1], first)
    assert await last_used() == first
    await write_counts(db, [key.key_id], [day], [2], first + dt.timedelta(seconds=30))
    assert await last_used() == first
    later = first + dt.timedelta(seconds=61)
    await write_counts(db, [key.key_id], [day], [3], later)
    assert await last_used() == later
    assert await usage_rows(db, key.key_id) == {today(): 3}  # the counts themselves: every time


async def test_a_flush_of_many_rows_writes_every_one(make_key: MakeKey, db):
    """More rows than one statement carries: all of them land, in one transaction."""
    key = await make_key()
    # Days long before any other test's: reports over all keys (the CLI's, the admin
    # API's) must not see them, whichever test runs first.
    first_day = day_of_date(today()) - 5000
    days = list(range(first_day, first_day + 1200))
    counted_at = dt.datetime.now(dt.UTC)
    await write_counts(db, [key.key_id] * len(days), days, [d % 7 + 1 for d in days], counted_at)
    rows = await db.fetch(
        "SELECT usage_date, image_count FROM usage WHERE api_key_id = $1", key.key_id
    )
    assert {day_of_date(r["usage_date"]): r["image_count"] for r in rows} == {
        d: d % 7 + 1 for d in days
    }


async def test_a_paced_flush_of_many_keys_writes_every_row_and_last_use(make_key: MakeKey, db):
    """More keys than one statement of either kind carries, with pauses between the
    statements: every key's count and its last use land."""
    owner = await make_key()
    rows = await db.fetch(
        """
        INSERT INTO api_keys (user_id, key_hash, prefix)
        SELECT $1, md5(g::text) || md5((g + 1)::text), 'nb_live_'
        FROM generate_series(1, 1100) AS g
        RETURNING id
        """,
        owner.user_id,
    )
    key_ids = [str(row["id"]) for row in rows]
    day = day_of_date(today())
    counted_at = dt.datetime.now(dt.UTC)
    counts = [i % 9 + 1 for i in range(len(key_ids))]
    await write_counts(db, key_ids, [day] * len(key_ids), counts, counted_at, spread=0.05)
    written = await db.fetch(
        "SELECT u.api_key_id, u.image_count, k.last_used_at FROM usage u"
        " JOIN api_keys k ON k.id = u.api_key_id WHERE k.user_id = $1",
        owner.user_id,
    )
    assert {str(r["api_key_id"]): r["image_count"] for r in written} == dict(
        zip(key_ids, counts, strict=True)
    )
    assert {r["last_used_at"] for r in written} == {counted_at}


async def test_two_flushers_writing_the_same_rows_in_opposite_orders_both_land(
    make_key: MakeKey, db, database_url: str
):
    """Two processes that both flush one shard (one's lease ran out mid-flush) may hand
    Postgres the same rows in different orders, in several statements each: they wait
    for each other, and neither fails on a deadlock."""
    owner = await make_key()
    rows = await db.fetch(
        """
        INSERT INTO api_keys (user_id, key_hash, prefix)
        SELECT $1, md5($2 || g::text) || md5(g::text || $2), 'nb_live_'
        FROM generate_series(1, 300) AS g
        RETURNING id
        """,
        owner.user_id,
        secrets.token_hex(8),  # hashes no other test's keys have
    )
    key_ids = [str(row["id"]) for row in rows]
    day = day_of_date(today())
    counted_at = dt.datetime.now(dt.UTC)
    other = await asyncpg.connect(database_url)
    try:
        # Paced statements: each transaction holds its first statement's row locks while
        # the other's first statement runs.
        await asyncio.gather(
            write_counts(db, key_ids, [day] * 300, [2] * 300, counted_at, spread=0.3),
            write_counts(other, key_ids[::-1], [day] * 300, [2] * 300, counted_at, spread=0.3),
        )
    finally:
        await other.close()
    written = await db.fetch(
        "SELECT u.image_count FROM usage u JOIN api_keys k ON k.id = u.api_key_id"
        " WHERE k.user_id = $1",
        owner.user_id,
    )
    assert [r["image_count"] for r in written] == [2] * 300


async def test_a_process_that_never_flushed_reports_a_lag_not_zero(
    make_gateway: MakeGateway, make_key: MakeKey
):
    """The flush lag gauge counts from the process's start until its first flush: a
    flusher that never succeeds must not look perfectly current (0 s) to an alert."""
    gateway = await make_gateway()  # flush interval: an hour
    key = await make_key()
    assert (await gateway.generate(key.key)).status == 200
    metrics = await (await gateway.client.get("/metrics")).text()
    lag = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_usage_flush_lag_seconds ")
    )
    assert lag > 0


async def test_a_counter_left_in_the_key_s_old_shard_does_not_stop_the_flush(
    gateway: Gateway, make_key: MakeKey, db: asyncpg.Connection
):
    """Counters were once sharded by the key, now by its user: during a rolling upgrade a
    (key, day) may be pending in both shards; the flush writes the larger count."""
    layout = gateway.services.layout
    day = day_of_date(today())
    key = await make_key("pro")
    while (old_shard := int(str(key.key_id)[:8], 16) % 16) == layout.shard_of(str(key.user_id)):
        key = await make_key("pro")  # one whose shard moved
    assert (await gateway.generate(key.key, n=2)).status == 200  # the new shard: 2
    redis = gateway.services.redis
    await redis.set(f"{layout.counter_prefix(old_shard)}{key.key_id}:{day}", 7)
    await redis.sadd(layout.pending(old_shard), f"{key.key_id}:{day}")
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 7}
    assert not await redis.sismember(layout.pending(old_shard), f"{key.key_id}:{day}")
