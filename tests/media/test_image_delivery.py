"""Only well-formed images are delivered, and so charged.

An ``openai``-type backend points at a fake upstream answering with ``b64_json``
images that the test chooses: real ones pass with their bytes untouched; fakes (a
signature followed by garbage, a bad CRC, a truncated file, a WebP lying about its
size) are dropped before delivery. When none is left the call is a 502 that counts
against the backend's circuit breaker.
"""

from __future__ import annotations

import base64
import io
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.images import chunk, encode, png, png_chunks
from tests.support.upstreams import serve_images_endpoint
from tests.support.usage import today, usage_rows

IHDR, IDAT, IEND = png_chunks(64, 64)
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _lying_webp() -> bytes:
    data = bytearray(encode("WEBP", 64, 64))
    data[4:8] = struct.pack("<I", len(data) + 4096)
    return bytes(data)


FAKES = {
    "png-signature-then-garbage": SIGNATURE + b"garbage" * 40,
    "jpeg-soi-then-garbage": b"\xff\xd8\xff\xe0" + b"garbage" * 40,
    "webp-header-then-garbage": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"garbage" * 4,
    "png-bad-crc": SIGNATURE + IHDR + chunk(b"IDAT", IDAT[8:-4], crc=0) + IEND,
    "png-truncated": png(64, 64)[:-20],
    "jpeg-truncated": encode("JPEG", 64, 64)[:-30],
    "webp-lying-about-its-size": _lying_webp(),
}
REAL = {
    "png": (png(64, 48), "PNG"),
    "jpeg": (encode("JPEG", 64, 48), "JPEG"),
    "webp": (encode("WEBP", 64, 48), "WEBP"),
}


class B64Upstream:
    """An OpenAI-compatible upstream whose images are ``images``, as ``b64_json``."""

    def __init__(self) -> None:
        self.images: list[bytes] = []
        self.base_url = ""
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.json()
        self.calls += 1
        data = [{"b64_json": base64.b64encode(image).decode()} for image in self.images]
        return web.json_response({"created": 0, "data": data})


@pytest.fixture
async def upstream() -> AsyncIterator[B64Upstream]:
    fake = B64Upstream()
    async with serve_images_endpoint(fake.handle) as base_url:
        fake.base_url = base_url
        yield fake


def remote(upstream: B64Upstream, **resilience: Any) -> dict[str, Any]:
    options = {"retries": 0, "breaker_failures": 0, **resilience}
    backend = {"type": "openai", "base_url": upstream.base_url, "model": "dall-e-2", **options}
    return {"backends": {"remote": backend}, "models": {"remote": "remote"}}


@pytest.mark.parametrize("fake", FAKES.values(), ids=FAKES.keys())
async def test_a_fake_image_is_not_delivered_and_not_charged(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: B64Upstream, db: Any, fake: bytes
) -> None:
    upstream.images = [fake]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote")

    error = await expect_error(response, 502, "upstream_error")
    assert error["message"] == "The image backend sent a malformed image."
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})


@pytest.mark.parametrize(("image", "fmt"), REAL.values(), ids=REAL.keys())
async def test_a_real_image_is_delivered_as_it_came(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: B64Upstream, image: bytes, fmt: str
) -> None:
    upstream.images = [image]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote")

    assert response.status == 200, await response.text()
    body = await response.json()
    delivered = base64.b64decode(body["data"][0]["b64_json"])
    assert delivered == image
    with Image.open(io.BytesIO(delivered)) as opened:
        assert (opened.format, opened.size) == (fmt, (64, 48))
    assert body["usage"] == {"images": 1}


async def test_only_the_well_formed_images_of_a_batch_are_delivered_and_charged(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: B64Upstream, db: Any
) -> None:
    good = png(64, 64)
    upstream.images = [good, FAKES["png-bad-crc"], good, FAKES["webp-lying-about-its-size"]]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", n=4)

    assert response.status == 200
    body = await response.json()
    assert [base64.b64decode(item["b64_json"]) for item in body["data"]] == [good, good]
    assert body["usage"] == {"images": 2}
    assert response.headers["x-ratelimit-remaining-images"] == "48"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_malformed_answers_count_against_the_circuit_breaker(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: B64Upstream
) -> None:
    upstream.images = [FAKES["png-signature-then-garbage"]]
    gateway = await make_gateway(remote(upstream, breaker_failures=2, breaker_reset_seconds=60))
    key = await make_key()

    for _ in range(2):
        await expect_error(await gateway.generate(key.key, model="remote"), 502, "upstream_error")
    response = await gateway.generate(key.key, model="remote")

    await expect_error(response, 503, "service_unavailable")
    assert upstream.calls == 2


async def test_the_local_backends_large_images_pass(
    make_gateway: MakeGateway, make_key: MakeKey
) -> None:
    gateway = await make_gateway()
    key = await make_key()

    response = await gateway.generate(key.key, n=2, size="1792x1024")

    assert response.status == 200
    body = await response.json()
    for item in body["data"]:
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as opened:
            assert opened.size == (1792, 1024)
    assert body["usage"] == {"images": 2}
