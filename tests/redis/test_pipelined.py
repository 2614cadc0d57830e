"""The hot path's pipelined Redis client: order, scripts, reconnects and timeouts.

Against the real Redis, and against a small TCP server that misbehaves on purpose (it
accepts and never answers, or hangs up), for the failures a real Redis will not stage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as redis_async
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.redis.pipelined import PipelinedRedis, PipelinedScript
from tests.support.config import REDIS_URL

ECHO = "return {KEYS[1], ARGV[1]}"


async def test_concurrent_calls_each_get_their_own_reply(redis_prefix: str):
    client = PipelinedRedis(REDIS_URL, timeout=5)
    script = PipelinedScript(client, ECHO)
    try:
        replies = await asyncio.gather(
            *(script(keys=(f"{redis_prefix}k{i}",), args=[i]) for i in range(500))
        )
        assert replies == [[f"{redis_prefix}k{i}".encode(), str(i).encode()] for i in range(500)]
    finally:
        await client.aclose()


async def test_a_script_redis_does_not_know_is_loaded_and_run_once(redis_prefix: str):
    client = PipelinedRedis(REDIS_URL, timeout=5)
    counter = f"{redis_prefix}counted"
    # A text Redis has never seen (as after a restart, when its script cache is empty).
    script = PipelinedScript(client, f"return redis.call('INCR', KEYS[1]) -- {redis_prefix}")
    plain = redis_async.Redis.from_url(REDIS_URL)
    try:
        assert await plain.script_exists(script.sha) == [False]
        assert await script(keys=(counter,), args=[]) == 1
        assert await script(keys=(counter,), args=[]) == 2
        assert int(await plain.get(counter) or 0) == 2
    finally:
        await plain.aclose()
        await client.aclose()


async def test_redis_errors_are_raised_and_the_connection_stays_usable(redis_prefix: str):
    client = PipelinedRedis(REDIS_URL, timeout=5)
    failing = PipelinedScript(client, "return redis.error_reply('NOPE said the script')")
    fine = PipelinedScript(client, ECHO)
    try:
        with pytest.raises(ResponseError, match="NOPE"):
            await failing(keys=(), args=[])
        assert await fine(keys=(f"{redis_prefix}a",), args=["b"]) == [
            f"{redis_prefix}a".encode(),
            b"b",
        ]
    finally:
        await client.aclose()


async def test_the_database_number_in_the_url_is_selected(redis_prefix: str):
    parts = urlsplit(REDIS_URL)
    url = urlunsplit((parts.scheme, parts.netloc, "/7", "", ""))
    client = PipelinedRedis(url, timeout=5)
    script = PipelinedScript(client, "return redis.call('SET', KEYS[1], 'x')")
    other = redis_async.Redis.from_url(url)
    key = f"{redis_prefix}in-db-7"
    try:
        await script(keys=(key,), args=[])
        assert await other.get(key) == b"x"
    finally:
        await other.delete(key)
        await other.aclose()
        await client.aclose()


@asynccontextmanager
async def misbehaving_server(mode: str) -> AsyncIterator[tuple[str, list[int]]]:
    """``silent``: reads and never answers; ``hang_up``: closes on the first bytes.

    Yields its URL and a list that counts connections.
    """
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await reader.read(1)
            if mode == "hang_up":
                writer.close()
                return
            await reader.read()  # until the client goes away
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0", connections
    finally:
        server.close()


async def test_a_late_reply_fails_the_waiting_calls_and_the_next_call_reconnects():
    async with misbehaving_server("silent") as (url, connections):
        client = PipelinedRedis(url, timeout=0.2)
        script = PipelinedScript(client, ECHO)
        try:
            results = await asyncio.gather(
                *(script(keys=("k",), args=[i]) for i in range(3)), return_exceptions=True
            )
            assert all(isinstance(result, RedisTimeoutError) for result in results)
            with pytest.raises(RedisTimeoutError):
                await script(keys=("k",), args=[1])
            assert len(connections) == 2  # the first was dropped, not reused out of step
        finally:
            await client.aclose()


async def test_a_lost_connection_fails_its_calls_and_the_next_call_reconnects():
    async with misbehaving_server("hang_up") as (url, connections):
        client = PipelinedRedis(url, timeout=5)
        script = PipelinedScript(client, ECHO)
        try:
            with pytest.raises(RedisConnectionError):
                await script(keys=("k",), args=[1])
            with pytest.raises(RedisConnectionError):
                await script(keys=("k",), args=[1])
            assert len(connections) == 2
        finally:
            await client.aclose()


async def test_nothing_listening_is_a_connection_error():
    async with misbehaving_server("silent") as (url, _):
        pass  # closed: nothing listens on that port any more
    client = PipelinedRedis(url, timeout=1)
    with pytest.raises(RedisConnectionError):
        await client.call("PING")


async def test_callers_share_one_connection_attempt():
    async with misbehaving_server("silent") as (url, connections):
        # A password: the client waits for AUTH's answer, which never comes.
        client = PipelinedRedis(url.replace("redis://", "redis://:secret@"), timeout=0.3)
        try:
            results = await asyncio.gather(
                *(client.call("PING") for _ in range(20)), return_exceptions=True
            )
            assert all(isinstance(result, RedisConnectionError) for result in results)
            assert len(connections) == 1
            # Right after a failed attempt, calls fail at once without another one.
            with pytest.raises(RedisConnectionError):
                await client.call("PING")
            assert len(connections) == 1
        finally:
            await client.aclose()


def test_tls_options_in_the_url_are_used():
    import ssl

    client = PipelinedRedis("rediss://redis.internal:6380/0?ssl_cert_reqs=none", timeout=1)
    context = client._ssl_context()
    assert context.verify_mode == ssl.CERT_NONE
    strict = PipelinedRedis("rediss://redis.internal:6380/0", timeout=1)._ssl_context()
    assert strict.verify_mode == ssl.CERT_REQUIRED
    assert strict.check_hostname


async def test_a_closed_client_stays_closed(redis_prefix: str):
    client = PipelinedRedis(REDIS_URL, timeout=5)
    assert await client.call("PING") == b"PONG"
    await client.aclose()
    with pytest.raises(RedisConnectionError):
        await client.call("PING")


def test_a_call_is_encoded_byte_for_byte_as_resp_bulk_strings():
    from gateway.redis.pipelined import _encode_parts

    def bulk(part: str | int | float) -> bytes:
        data = str(part).encode()
        return b"$%d\r\n%b\r\n" % (len(data), data)

    for parts in (
        ("gw:{s3}:rl:0b4f", "gw:{s3}:pending", 100000, 1, "a1:1f3", "", 1795566244123456),
        ("préfixe:{s1}:rl:k", "", 2, 0.25),  # text outside ASCII: lengths are in bytes
        (),
    ):
        assert _encode_parts(parts) == b"".join(bulk(part) for part in parts)
