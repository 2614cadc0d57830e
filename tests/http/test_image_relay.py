"""Images relayed as they came: exact bytes, bounded reads, slow and vanishing clients.

An ``openai``-type backend points at a fake upstream answering with large random-pixel
PNGs (stored, so nothing can shrink them) as ``b64_json``. The client must get the
upstream's base64 byte for byte, with a right ``Content-Length``; an upstream answer
over the size limit is cut off with a 502 and charges nothing; a client that reads
slowly or leaves mid-response leaves no buffer behind (traced with ``tracemalloc``:
the gateway runs in this process) and is charged as the delivery contract says (the
images count once their bytes started to go out).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import random
import re
import socket
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.backends import openai as openai_backend
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.upstreams import serve_images_endpoint
from tests.support.usage import usage_rows
from tests.support.waiting import eventually

MIB = 1024 * 1024


def stored_png(size: int, seed: int, *, idat_bytes: int = 0) -> bytes:
    """An RGB PNG of random pixels, about ``size`` bytes, its IDAT a zlib stream of
    stored blocks; split into IDAT chunks of ``idat_bytes`` if given."""
    width = int((size / 3) ** 0.5)
    height = size // (3 * width + 1)
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(3 * width) for _ in range(height))
    data = zlib.compress(rows, 0)
    step = idat_bytes or len(data)
    idats = [data[i : i + step] for i in range(0, len(data), step)]

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + b"".join(chunk(b"IDAT", part) for part in idats)
        + chunk(b"IEND", b"")
    )


class ImageUpstream:
    """Answers with the first ``n`` of ``texts`` (base64) as ``b64_json``."""

    def __init__(self) -> None:
        self.texts: list[bytes] = []
        self.base_url = ""
        #: Set to send this answer instead (a raw body with its own framing).
        self.answer: bytes | None = None
        #: Set to answer with this JSON body instead.
        self.body: bytes | None = None
        self._answers: dict[tuple[int, tuple[int, ...]], bytes] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        n = (await request.json())["n"]
        if self.answer is not None:
            assert request.transport is not None
            request.transport.write(self.answer)
            await asyncio.Event().wait()  # never answers more; the gateway gives up
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        key = (n, tuple(map(id, self.texts)))
        body = self._answers.get(key)
        if body is None:  # made once: the tests that trace memory see only the gateway's
            items = b",".join(
                b'{"b64_json": "' + text + b'", "revised_prompt": null}' for text in self.texts[:n]
            )
            body = self._answers[key] = b'{"created": 1, "data": [' + items + b"]}"
        return web.Response(body=body, content_type="application/json")


@pytest.fixture(scope="module")
def big_images() -> list[bytes]:
    return [stored_png(4 * MIB, seed) for seed in range(4)]


@pytest.fixture
async def upstream(big_images: list[bytes]) -> AsyncIterator[ImageUpstream]:
    fake = ImageUpstream()
    fake.texts = [base64.b64encode(image) for image in big_images]
    async with serve_images_endpoint(fake.handle) as base_url:
        fake.base_url = base_url
        yield fake


def remote(upstream: ImageUpstream) -> dict[str, Any]:
    backend = {
        "type": "openai",
        "base_url": upstream.base_url,
        "model": "dall-e-2",
        "retries": 0,
        "sizes": ["1024x1024"],
    }
    return {"backends": {"remote": backend}, "models": {"remote": "remote"}}


async def charged(gateway: Any, db: Any, key_id: Any) -> int:
    await gateway.flush()
    return sum((await usage_rows(db, key_id)).values())


@pytest.mark.parametrize("n", [1, 2, 3, 4])
async def test_the_client_gets_the_upstreams_images_byte_for_byte(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: ImageUpstream,
    big_images: list[bytes],
    db: Any,
    n: int,
) -> None:
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", n=n, size="1024x1024")

    assert response.status == 200, await response.text()
    raw = await response.read()
    assert int(response.headers["Content-Length"]) == len(raw)
    assert response.headers["X-Gateway-Backend"] == "remote"
    body = orjson.loads(raw)
    assert [item["b64_json"].encode() for item in body["data"]] == upstream.texts[:n]
    assert [base64.b64decode(item["b64_json"]) for item in body["data"]] == big_images[:n]
    assert body["usage"] == {"images": n}
    assert body["model"] == "remote"
    assert await charged(gateway, db, key.key_id) == n


async def test_images_with_many_small_data_chunks_are_checked_and_relayed(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: ImageUpstream
) -> None:
    image = stored_png(MIB, 9, idat_bytes=8192)  # as libpng writes them
    upstream.texts = [base64.b64encode(image)]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", size="1024x1024")

    assert response.status == 200
    assert base64.b64decode((await response.json())["data"][0]["b64_json"]) == image


@pytest.mark.parametrize("how", ["announced", "sent"])
async def test_an_answer_over_the_limit_is_cut_off_and_charges_nothing(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: ImageUpstream,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    monkeypatch.setattr(openai_backend, "json_limit", lambda n: MIB)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if how == "announced":
        upstream.answer = head + b"Content-Length: %d\r\n\r\n{" % (MIB + 1)
    else:  # chunked: the size shows only as the bytes arrive
        piece = b'{"data": [{"b64_json": "' + b"A" * (MIB // 2)
        upstream.answer = head + b"Transfer-Encoding: chunked\r\n\r\n"
        upstream.answer += b"%x\r\n%s\r\n" % (len(piece), piece) * 3
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", size="1024x1024")

    error = await expect_error(response, 502, "upstream_error")
    assert "too large" in error["message"]
    assert await charged(gateway, db, key.key_id) == 0


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def open_request(port: int, key: str, n: int) -> socket.socket:
    """A raw client with a small receive buffer that has sent its request."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    body = orjson.dumps({"prompt": "p", "model": "remote", "n": n, "size": "1024x1024"})
    head = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, head.encode() + body)
    return sock


async def read_at_least(sock: socket.socket, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < count:
        piece = await loop.sock_recv(sock, 64 * 1024)
        if not piece:
            break
        data += piece
    return bytes(data)


@pytest.fixture
def tracing() -> AsyncIterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


async def test_a_slow_client_holds_about_its_answer_and_leaves_nothing_behind(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: ImageUpstream,
    db: Any,
    tracing: None,
) -> None:
    gateway = await make_gateway(remote(upstream))
    key = await make_key()
    port = gateway.client.port
    upstream.texts = upstream.texts[:1]
    answer_size = len(upstream.texts[0])
    warm = await gateway.generate(key.key, model="remote", size="1024x1024")
    assert len(await warm.read()) > answer_size  # the upstream's answer is made and kept
    baseline = traced()

    sock = await open_request(port, key.key, n=1)
    head = await read_at_least(sock, 512 * 1024)  # the answer is under way, stalled
    held = traced() - baseline
    end = head.index(b"\r\n\r\n") + 4
    length = int(re.search(rb"(?i)content-length: *(\d+)", head[:end]).group(1))  # type: ignore[union-attr]
    body = head[end:] + await read_at_least(sock, length - (len(head) - end))
    sock.close()

    assert head.startswith(b"HTTP/1.1 200 OK")
    assert len(body) == length
    assert [item["b64_json"].encode() for item in orjson.loads(body)["data"]] == upstream.texts
    # The upstream's answer in one buffer, and not much more: no copy of it, save the
    # piece the transport could not send at once (asyncio's transport copies it; under
    # uvloop, as served, it keeps a reference instead).
    assert held < 1.5 * answer_size, (held, answer_size)
    del head, body  # the test's own copy
    await eventually(lambda: _near(traced(), baseline))
    assert await charged(gateway, db, key.key_id) == 2


async def test_a_client_that_leaves_mid_answer_is_charged_and_leaves_nothing_behind(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: ImageUpstream,
    db: Any,
    tracing: None,
) -> None:
    gateway = await make_gateway(remote(upstream))
    key = await make_key()
    warm = await gateway.generate(key.key, model="remote", n=4, size="1024x1024")
    assert warm.status == 200
    await warm.read()
    baseline = traced()

    sock = await open_request(gateway.client.port, key.key, n=4)
    head = await read_at_least(sock, 256 * 1024)
    sock.close()  # gone, with most of the answer unread

    assert head.startswith(b"HTTP/1.1 200 OK")
    await eventually(lambda: _near(traced(), baseline))
    # Its bytes had started to go out: the images count (the delivery contract).
    assert await charged(gateway, db, key.key_id) == 8
    # And the gateway serves the next client as before.
    response = await gateway.generate(key.key, model="remote", size="1024x1024")
    assert response.status == 200


async def _near(now: int, baseline: int) -> object:
    """True once the traced memory is back within 1 MiB of ``baseline``."""
    return True if now - baseline < MIB else ("traced bytes above baseline", now - baseline)


@pytest.mark.parametrize(
    "spoiler",
    ["Aé=".encode(), b"-", b"!", b"="],
    ids=["not-ascii", "dash", "bang", "padding"],
)
async def test_a_character_that_is_no_base64_digit_inside_an_image_is_refused(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: ImageUpstream, db: Any, spoiler: bytes
) -> None:
    """Valid JSON either way, deep inside the text: every digit is checked."""
    text = bytearray(upstream.texts[0])
    middle = len(text) // 2
    text[middle : middle + len(spoiler)] = spoiler
    upstream.texts = [bytes(text)]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", size="1024x1024")

    error = await expect_error(response, 502, "upstream_error")
    assert error["message"] == "The image backend sent a malformed image."
    assert await charged(gateway, db, key.key_id) == 0


ANSWER_LAYOUTS = {
    "indented": lambda text: orjson.dumps(
        {"created": 1, "data": [{"b64_json": text, "revised_prompt": 'say "#0"'}]},
        option=orjson.OPT_INDENT_2,
    ),
    "escaped slashes": lambda text: (
        b'{"data":[{"revised_prompt":"say \\"#0\\"","b64_json":"'
        + text.replace("/", "\\/").encode()
        + b'"}]}'
    ),
    "\\u escapes": lambda text: (
        b'{"data":[{"b64_json":"'
        + text.replace("A", "\\u0041").encode()
        + b'","revised_prompt":"say \\u0022#0\\""}]}'
    ),
}


@pytest.mark.parametrize("layout", ANSWER_LAYOUTS.values(), ids=ANSWER_LAYOUTS.keys())
async def test_the_image_comes_through_however_the_upstream_writes_its_json(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: ImageUpstream, db: Any, layout: Any
) -> None:
    """JSON escapes in the base64 (``\\/`` is legal) and a prompt like a marker of the
    answer's parsing: the client gets the image's base64 as an encoder writes it."""
    image = stored_png(MIB, 5)
    text = base64.b64encode(image).decode()
    upstream.body = layout(text)
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", size="1024x1024")

    assert response.status == 200, await response.text()
    [item] = (await response.json())["data"]
    assert item["b64_json"] == text
    assert item["revised_prompt"] == 'say "#0"'
    assert await charged(gateway, db, key.key_id) == 1


@pytest.mark.parametrize(
    "spoiler", [b"\x01", b'"', b"\\A"], ids=["control-character", "quote", "bad-escape"]
)
async def test_a_character_that_ends_or_breaks_the_json_string_inside_an_image_is_refused(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: ImageUpstream, db: Any, spoiler: bytes
) -> None:
    """Deep inside the text, where the answer's parsing looks for the string's end."""
    text = bytearray(upstream.texts[0])
    middle = len(text) // 2
    text[middle : middle + len(spoiler)] = spoiler
    upstream.texts = [bytes(text)]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", size="1024x1024")

    error = await expect_error(response, 502, "upstream_error")
    assert error["message"] == "The image backend sent a malformed response."
    assert await charged(gateway, db, key.key_id) == 0
