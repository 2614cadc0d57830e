"""Keys are looked up by their hash only, and stored nowhere in the clear (Postgres, Redis)."""

from __future__ import annotations

import collections
import hashlib
import re
from typing import Any

import redis
import redis.asyncio

from gateway.db.keys import KeyRow
from gateway.keys.cache import PostgresKeyStore
from gateway.keys.format import RANDOM_LENGTH, generate_key, hash_key
from tests.support.config import KEY_PREFIX, REDIS_URL
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import ANY, expect_error


class CountingStore(PostgresKeyStore):
    """The real Postgres store, counting what it is asked for."""

    def __init__(self, pool: Any, lookups: collections.Counter[str]) -> None:
        super().__init__(pool)
        self.lookups = lookups

    async def fetch(self, key_hash: str) -> KeyRow | None:
        self.lookups[key_hash] += 1
        return await super().fetch(key_hash)


def one_character_off(key: str, position: int) -> str:
    index = len(KEY_PREFIX) + position
    replacement = "a" if key[index] != "a" else "b"
    return key[:index] + replacement + key[index + 1 :]


async def test_keys_are_found_by_their_hash_only(make_gateway: MakeGateway, make_key: MakeKey):
    lookups: collections.Counter[str] = collections.Counter()
    gateway = await make_gateway(key_store=lambda pool: CountingStore(pool, lookups))
    key = await make_key()
    for position in (0, 5, RANDOM_LENGTH // 2, RANDOM_LENGTH - 1):
        near_miss = one_character_off(key.key, position)
        await expect_error(await gateway.generate(near_miss), 401, "invalid_api_key", ANY)
    assert not lookups, "a key that fails its checksum still reached Postgres"

    assert (await gateway.generate(key.key)).status == 200
    assert dict(lookups) == {hash_key(key.key): 1}
    assert hash_key(key.key) == hashlib.sha256(key.key.encode()).hexdigest()

    # A well-formed key of someone else's shape is looked up under its own hash only.
    stranger = generate_key(KEY_PREFIX)
    await expect_error(await gateway.generate(stranger), 401, "invalid_api_key", ANY)
    assert dict(lookups) == {hash_key(key.key): 1, hash_key(stranger): 1}
    assert all(re.fullmatch(r"[0-9a-f]{64}", asked) for asked in lookups)


async def test_keys_are_stored_nowhere_in_the_clear(
    gateway: Gateway, make_key: MakeKey, db: Any, redis_prefix: str
):
    key = await make_key()
    assert (await gateway.generate(key.key)).status == 200  # cached in Redis and in process
    await gateway.flush()
    secret_parts = (key.key, key.key[len(KEY_PREFIX) : len(KEY_PREFIX) + RANDOM_LENGTH])
    row = await db.fetchval("SELECT row_to_json(k)::text FROM api_keys k WHERE id = $1", key.key_id)
    assert hash_key(key.key) in row
    assert not any(part in row for part in secret_parts), row
    dump = await db.fetchval(
        "SELECT coalesce(string_agg(row_to_json(t)::text, '\n'), '') FROM "
        "(SELECT * FROM users u WHERE u.id = $1) t",
        key.user_id,
    )
    assert not any(part in dump for part in secret_parts)

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        async for name in client.scan_iter(match=f"{redis_prefix}*", count=1000):
            kind = (await client.type(name)).decode()
            if kind == "string":
                values = [await client.get(name)]
            elif kind == "hash":
                mapping = await client.hgetall(name)
                values = list(mapping) + list(mapping.values())
            elif kind == "zset":
                values = await client.zrange(name, 0, -1)
            elif kind == "set":
                values = list(await client.smembers(name))
            elif kind == "list":
                values = await client.lrange(name, 0, -1)
            else:
                values = []
            for blob in [name, *values]:
                text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else str(blob)
                assert not any(part in text for part in secret_parts), name
    finally:
        await client.aclose()
