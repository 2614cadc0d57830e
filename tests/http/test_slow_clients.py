"""Slow and idle clients: a request head or body sent a byte at a time is cut off, and
neither it nor thousands of idle connections delay anyone else.

Every test talks to a real ``gateway serve`` process (the module's ``served``), over raw
sockets, because a client library refuses to send most of this. A bad request is a 4xx
(an OpenAI-shaped JSON error where the gateway's own code answers), never a 5xx, and the
server stays healthy for the next client on a fresh connection.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.support.gateway import MakeKey
from tests.support.processes import (
    HEADER_READ_TIMEOUT,
    IDLE_CONNECTIONS,
    Served,
    raise_open_file_limit,
)
from tests.support.raw_http import (
    PROMPT_ANSWER_SECONDS,
    assert_healthy,
    http_request,
    read_response,
)

pytestmark = pytest.mark.slow

#: How long a server may let a client take to send its request headers or body.
REQUEST_READ_DEADLINE = 10.0


async def drip(
    port: int,
    prefix: bytes,
    data: bytes,
    interval: float,
    seconds: float,
    *,
    kept_alive: bool = False,
    dripping: asyncio.Event | None = None,
) -> tuple[bool, float]:
    """Send ``prefix``, then ``data`` one byte per ``interval`` for at most ``seconds``.

    With ``kept_alive``, first send a whole request on the connection and read its 200.
    ``dripping`` is set once the first byte of ``data`` is sent. Returns ``(closed by the
    server, seconds until then)``, counted from the start of ``prefix``.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kept_alive:
            writer.write(http_request("GET", "/healthz", close=False))
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
            assert response.status == 200
        started = time.monotonic()
        writer.write(prefix)
        await writer.drain()
        for index in range(len(data)):
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                return False, elapsed
            try:
                writer.write(data[index : index + 1])
                await writer.drain()
                if dripping is not None:
                    dripping.set()
                # Wait one interval for the server to answer or hang up: either ends it.
                got = await asyncio.wait_for(reader.read(65536), interval)
            except TimeoutError:
                continue
            except ConnectionError:
                return True, time.monotonic() - started
            if got == b"" or got.startswith(b"HTTP/1."):  # hung up, or answered (408)
                return True, time.monotonic() - started
            raise AssertionError(f"unexpected bytes to a slow client: {got[:200]!r}")
        return False, time.monotonic() - started
    finally:
        writer.close()


SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


async def test_slow_clients_do_not_delay_other_clients(served: Served, make_key: MakeKey):
    """Twenty slowloris connections drip headers; another client is served at full speed."""
    key = await make_key("pro")
    drips = [
        asyncio.ensure_future(drip(served.port, SLOW_HEADERS, b"a" * 1000, 0.1, seconds=3.0))
        for _ in range(20)
    ]
    latencies = []
    try:
        async with aiohttp.ClientSession() as session:
            while not all(d.done() for d in drips) and len(latencies) < 200:
                started = time.monotonic()
                async with session.post(
                    f"{served.url}/v1/images/generations",
                    json={"prompt": "meanwhile", "size": "256x256"},
                    headers={"Authorization": f"Bearer {key.key}"},
                ) as response:
                    await response.read()
                    assert response.status in (200, 429)
                latencies.append(time.monotonic() - started)
    finally:
        results = await asyncio.gather(*drips, return_exceptions=True)
    assert len(latencies) >= 10
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    assert all(not isinstance(r, BaseException) for r in results), results


@pytest.mark.parametrize("kept_alive", [False, True], ids=["first-request", "kept-alive"])
async def test_slow_headers_are_cut_off(served: Served, kept_alive: bool):
    closed, after = await drip(
        served.port,
        SLOW_HEADERS,
        b"a" * 1000,
        0.1,
        REQUEST_READ_DEADLINE,
        kept_alive=kept_alive,
    )
    assert closed, f"still open after {after:.1f}s of one header byte per 100 ms"


async def test_cutting_off_slow_headers_stalls_no_one(served: Served, make_key: MakeKey):
    """While one connection drips its headers until it is cut off, other clients are
    served at once; a kept-alive connection idle for longer than the header deadline
    between its requests is not cut off (only the keep-alive timer governs it)."""
    key = await make_key("pro")
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(http_request("GET", "/healthz", close=False))
        await writer.drain()
        first = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
        assert first.status == 200
        idle_since = time.monotonic()

        dripping = asyncio.Event()
        slow = asyncio.ensure_future(
            drip(
                served.port,
                SLOW_HEADERS,
                b"a" * 1000,
                0.1,
                REQUEST_READ_DEADLINE,
                dripping=dripping,
            )
        )
        try:
            await asyncio.wait_for(dripping.wait(), PROMPT_ANSWER_SECONDS)
            async with asyncio.timeout(PROMPT_ANSWER_SECONDS):
                await assert_healthy(served, key.key)
            assert not slow.done(), "the slow client was cut off before the others were served"
        finally:
            closed, after = await slow
        assert closed, f"still open after {after:.1f}s of one header byte per 100 ms"

        assert time.monotonic() - idle_since > HEADER_READ_TIMEOUT
        writer.write(http_request("GET", "/healthz"))
        await writer.drain()
        second = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
        assert second.status == 200
    finally:
        writer.close()
    log = served.log_text()
    assert "request headers not complete" in log
    assert "X-Slow" not in log


async def test_a_slow_body_is_cut_off(served: Served):
    head = http_request(
        "POST",
        "/v1/auth/login",
        headers=[("Content-Type", "application/json")],
        content_length=10_000,
        close=False,
    )
    closed, after = await drip(
        served.port, head + b'{"email": ', b" " * 10_000, 0.1, REQUEST_READ_DEADLINE
    )
    assert closed, f"still open after {after:.1f}s"


async def test_thousands_of_idle_connections_do_not_block_a_request(
    served: Served, make_key: MakeKey
):
    soft = raise_open_file_limit(2 * IDLE_CONNECTIONS + 1024)
    count = min(IDLE_CONNECTIONS, soft - 512)
    if count < 500:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low for this test")
    key = await make_key("pro")
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for start in range(0, count, 100):  # in batches, within the listen backlog
            pairs = await asyncio.gather(
                *(
                    asyncio.open_connection("127.0.0.1", served.port)
                    for _ in range(min(100, count - start))
                )
            )
            readers += [reader for reader, _ in pairs]
            writers += [writer for _, writer in pairs]
        # One idle connection sends a byte, so the server holds a half-read request too.
        writers[0].write(b"G")
        await writers[0].drain()
        started = time.monotonic()
        await assert_healthy(served, key.key)
        assert time.monotonic() - started < 2.0
        # The idle connections were accepted and are still served.
        for writer, reader in ((writers[-1], readers[-1]), (writers[1], readers[1])):
            writer.write(http_request("GET", "/healthz"))
            response = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
            assert response.status == 200
    finally:
        for writer in writers:
            writer.close()
    await assert_healthy(served, key.key)


async def test_a_connection_busy_past_the_header_deadline_is_not_cut_off(served: Served):
    """Requests back to back on one connection, for twice the header deadline: each
    head gets its own time, so none is cut off and the connection stays open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + 2 * HEADER_READ_TIMEOUT
        answered = 0
        while loop.time() < until:
            writer.write(http_request("GET", "/healthz", close=False))
            await writer.drain()
            answer = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
            assert answer.status == 200
            answered += 1
        assert answered > 1
    finally:
        writer.close()
