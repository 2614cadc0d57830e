"""Bodies with a Content-Length: one buffer of that size, read straight from the socket.

Once a response's head is in, the rest of a sized body goes from the socket into its
buffer without passing the parser; these tests check that the bytes are exact however
they arrive, that the connection is reused correctly after such a body, and that the
ways a body can go wrong still fail as before.
"""

from __future__ import annotations

import asyncio
import gzip
import os

import pytest

from gateway.backends import h1
from tests.backends.test_h1 import (  # fixtures and helpers of the client's own tests
    Conn,
    RawStart,
    call,
    client,
    make_client,
    raw,
    response,
)

__all__ = ["client", "make_client", "raw"]

BIG = os.urandom(3 * 1024 * 1024 + 17)
MAX = 16 * 1024 * 1024


@pytest.mark.parametrize("piece", [1, 7, 4096, 65536, 1 << 20])
async def test_a_sized_body_arriving_in_pieces_is_exact(
    client: h1.Client, raw: RawStart, piece: int
) -> None:
    data = os.urandom(300_000) if piece < 4096 else BIG

    async def handler(conn: Conn) -> None:
        await conn.request()
        whole = response(data)
        for start in range(0, len(whole), piece):
            conn.send(whole[start : start + piece])
            await conn.writer.drain()

    server = await raw(handler)

    answer = await call(client, server.url, max_bytes=MAX)

    assert answer.status == 200
    assert answer.body == data


async def test_a_body_is_the_upstreams_bytes_where_its_buffer_held_other_data(
    client: h1.Client, raw: RawStart
) -> None:
    # The body's buffer is not zeroed first (gateway/backends/buffers.py): memory freed
    # just before, at the same size, is what the heap hands out next (below glibc's
    # mmap threshold, which a test process keeps at its default).
    data = os.urandom(100_000)  # neither the stale bytes nor the zeros of fresh memory

    async def handler(conn: Conn) -> None:
        await conn.request()
        whole = response(data)
        for start in range(0, len(whole), 4096):
            conn.send(whole[start : start + 4096])
            await conn.writer.drain()

    server = await raw(handler)
    stale = bytearray(b"\xaa") * len(data)
    del stale

    answer = await call(client, server.url, max_bytes=MAX)

    assert answer.status == 200
    assert answer.body == data


async def test_the_connection_is_reused_after_a_body_read_straight_into_its_buffer(
    client: h1.Client, raw: RawStart
) -> None:
    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            conn.send(response(BIG if request.target == "/big" else b"small"))

    server = await raw(handler)

    assert (await call(client, server.url + "/big", max_bytes=MAX)).body == BIG
    assert (await call(client, server.url + "/small", max_bytes=MAX)).body == b"small"
    assert (await call(client, server.url + "/big", max_bytes=MAX)).body == BIG
    assert server.accepted == 1


async def test_a_compressed_sized_body_is_decoded(client: h1.Client, raw: RawStart) -> None:
    packed = gzip.compress(BIG, compresslevel=1)

    async def handler(conn: Conn) -> None:
        await conn.request()
        conn.send(response(packed, "Content-Encoding: gzip"))

    server = await raw(handler)

    assert (await call(client, server.url, max_bytes=MAX)).body == BIG


async def test_a_sized_body_cut_short_is_an_error(client: h1.Client, raw: RawStart) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        conn.send(response(BIG)[:-1000])
        await conn.writer.drain()
        conn.close()

    server = await raw(handler)

    with pytest.raises(h1.ConnectionClosed):
        await call(client, server.url, max_bytes=MAX)


async def test_bytes_after_a_sized_body_make_the_connection_unusable(
    client: h1.Client, raw: RawStart
) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.send(response(BIG) + b"HTTP/1.1 200 OK\r\n")

    server = await raw(handler)

    assert (await call(client, server.url, max_bytes=MAX)).body == BIG
    await asyncio.wait_for(server.conns[0].gone.wait(), 5)  # the client dropped it
    assert (await call(client, server.url, max_bytes=MAX)).body == BIG
    assert server.accepted == 2
