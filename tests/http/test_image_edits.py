"""Image edits and variations through the official openai SDK, against the local backend."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai.types import ImageEditCompletedEvent

from tests.support.backend_cases import OPENAI_KEY
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.images import encode, pattern_png, pixels, rgba_png
from tests.support.providers import OpenAIFake
from tests.support.usage import today, usage_rows

SIZE = 256
# The SDK marks images.create_variation deprecated (dall-e-2's); the API still has it.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


def sdk(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    base_url = str(gateway.client.make_url("/v1"))
    return openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0)


def b64_image(data: openai.types.ImagesResponse) -> bytes:
    assert data.data is not None
    item = data.data[0]
    assert item.b64_json is not None
    return base64.b64decode(item.b64_json)


async def test_edit_with_mask_changes_only_the_masked_area(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    source = pattern_png(SIZE, SIZE)
    mask = rgba_png(SIZE, SIZE, (0, 0, SIZE // 2, SIZE))  # the left half may change
    async with sdk(gateway, key.key) as client:
        result = await client.images.edit(
            image=("in.png", source, "image/png"),
            mask=("mask.png", mask, "image/png"),
            prompt="a red boat",
            size=f"{SIZE}x{SIZE}",
        )
    assert result.usage is not None
    (width, height), out = pixels(b64_image(result))
    _, original = pixels(source)
    assert (width, height) == (SIZE, SIZE)
    left = [i for i in range(len(out)) if i % SIZE < SIZE // 2]
    right = [i for i in range(len(out)) if i % SIZE >= SIZE // 2]
    assert all(out[i] == original[i] for i in right)
    changed = sum(out[i] != original[i] for i in left)
    assert changed > 0.9 * len(left)


async def test_edit_depends_on_every_image(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    first, second, other = pattern_png(64, 64), pattern_png(64, 64, 1), pattern_png(64, 64, 2)
    async with sdk(gateway, key.key) as client:
        one = await client.images.edit(
            image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
            prompt="merge them",
            size=f"{SIZE}x{SIZE}",
            n=2,
        )
        again = await client.images.edit(
            image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
            prompt="merge them",
            size=f"{SIZE}x{SIZE}",
            n=2,
        )
        changed = await client.images.edit(
            image=[("a.png", first, "image/png"), ("c.png", other, "image/png")],
            prompt="merge them",
            size=f"{SIZE}x{SIZE}",
            n=2,
        )
    assert one.data is not None
    assert len(one.data) == 2
    assert b64_image(one) == b64_image(again)  # deterministic
    assert b64_image(one) != b64_image(changed)


async def test_edit_takes_jpeg_and_webp(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        for fmt, media in (("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
            result = await client.images.edit(
                image=("in", encode(fmt, 100, 80), media), prompt="tidy", size="256x256"
            )
            assert pixels(b64_image(result))[0] == (256, 256)


async def test_variation(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    source = pattern_png(SIZE, SIZE)
    async with sdk(gateway, key.key) as client:
        result = await client.images.create_variation(
            image=("in.png", source, "image/png"), n=2, size=f"{SIZE}x{SIZE}"
        )
    assert result.data is not None
    assert len(result.data) == 2
    first = b64_image(result)
    assert pixels(first)[0] == (SIZE, SIZE)
    assert first != source


@pytest.mark.parametrize("operation", ["edit", "variation"])
async def test_response_format_url(gateway: Gateway, make_key: MakeKey, operation: str):
    key = await make_key()
    source = pattern_png(SIZE, SIZE)
    async with sdk(gateway, key.key) as client:
        if operation == "edit":
            result = await client.images.edit(
                image=("in.png", source, "image/png"),
                mask=("mask.png", rgba_png(SIZE, SIZE, (0, 0, 10, 10)), "image/png"),
                prompt="a kite",
                size=f"{SIZE}x{SIZE}",
                response_format="url",
            )
        else:
            result = await client.images.create_variation(
                image=("in.png", source, "image/png"), size=f"{SIZE}x{SIZE}", response_format="url"
            )
    assert result.data is not None
    url = result.data[0].url
    assert url is not None
    assert result.data[0].b64_json is None
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.content_type == "image/png"
        assert pixels(await response.read())[0] == (SIZE, SIZE)


async def test_size_auto_and_usage_charged(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        raw = await client.images.with_raw_response.edit(
            image=("in.png", pattern_png(32, 32), "image/png"), prompt="x", size="auto", n=3
        )
    result = raw.parse()
    assert result.data is not None
    assert len(result.data) == 3
    assert pixels(b64_image(result))[0] == (1024, 1024)
    assert raw.headers["x-ratelimit-remaining-images"] == "47"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 3}


async def test_model_that_cannot_edit(make_gateway: MakeGateway, make_key: MakeKey, fake_upstream):
    gateway = await make_gateway(
        {
            "backends": {"remote": {"type": "http", "base_url": fake_upstream.url}},
            "models": {"remote": "remote"},
        }
    )
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.edit(
                image=("in.png", pattern_png(8, 8), "image/png"), prompt="x", model="remote"
            )
        assert bad.value.param == "model"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.create_variation(
                image=("in.png", pattern_png(8, 8), "image/png"), model="remote"
            )
        assert bad.value.param == "model"
    assert fake_upstream.requests == []


async def test_edit_streams_partial_images_then_the_edit(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key()
    source, mask = pattern_png(SIZE, SIZE), rgba_png(SIZE, SIZE, (0, 0, SIZE // 2, SIZE))
    inputs = {
        "image": ("in.png", source, "image/png"),
        "mask": ("mask.png", mask, "image/png"),
        "prompt": "a red boat",
        "size": f"{SIZE}x{SIZE}",
    }
    async with sdk(gateway, key.key) as client:
        stream = await client.images.edit(**inputs, stream=True, partial_images=2)
        events = [event async for event in stream]
        whole = await client.images.edit(**inputs)

    assert [type(event).__name__ for event in events] == [
        "ImageEditPartialImageEvent",
        "ImageEditPartialImageEvent",
        "ImageEditCompletedEvent",
    ]
    assert [event.type for event in events] == [
        "image_edit.partial_image",
        "image_edit.partial_image",
        "image_edit.completed",
    ]
    assert [getattr(event, "partial_image_index", None) for event in events] == [0, 1, None]
    final = events[-1]
    assert isinstance(final, ImageEditCompletedEvent)
    assert whole.data is not None
    assert final.b64_json == whole.data[0].b64_json  # the same edit, streamed
    assert final.size == f"{SIZE}x{SIZE}"
    assert final.usage.model_extra == {"images": 1}
    first = base64.b64decode(events[0].b64_json)
    assert pixels(first)[0] == (SIZE, SIZE)
    assert first != base64.b64decode(final.b64_json)  # a coarse version first
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}  # one streamed, one not


async def test_idempotency_key_replays_an_edit(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key()
    source, mask = pattern_png(64, 64), rgba_png(64, 64, (0, 0, 32, 32))
    headers = {"Idempotency-Key": "edit-once"}
    async with sdk(gateway, key.key) as client:
        calls = [
            await client.images.with_raw_response.edit(
                image=("in.png", source, "image/png"),
                mask=("mask.png", mask, "image/png"),
                prompt="a kite",
                size="256x256",
                extra_headers=headers,
            )
            for _ in range(2)
        ]
        with pytest.raises(openai.UnprocessableEntityError):  # the key, another image
            await client.images.edit(
                image=("in.png", pattern_png(64, 64, 1), "image/png"),
                mask=("mask.png", mask, "image/png"),
                prompt="a kite",
                size="256x256",
                extra_headers=headers,
            )
    first, again = calls
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert b64_image(again.parse()) == b64_image(first.parse())
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 1}


@pytest.fixture
async def openai_upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAIFake]:
    monkeypatch.setenv("TEST_OPENAI_KEY", OPENAI_KEY)
    fake = OpenAIFake(OPENAI_KEY)
    server = TestServer(fake.app())
    await server.start_server()
    fake.origin = str(server.make_url("")).rstrip("/")
    yield fake
    fake.release.set()
    await server.close()


async def test_openai_upstream_end_to_end(
    make_gateway: MakeGateway, make_key: MakeKey, openai_upstream: OpenAIFake, db
):
    gateway = await make_gateway(
        {
            "backends": {
                "openai": {
                    "type": "openai",
                    "base_url": openai_upstream.base_url,
                    "api_key_env": "TEST_OPENAI_KEY",
                    "model": "gpt-image-1",
                }
            },
            "models": {"gpt-image-1": "openai"},
            "default_model": "gpt-image-1",
        }
    )
    key = await make_key()
    first, second = pattern_png(64, 64), pattern_png(64, 64, 1)
    mask = rgba_png(64, 64, (0, 0, 32, 32))
    async with sdk(gateway, key.key) as client:
        edited = await client.images.edit(
            image=("a.png", first, "image/png"),
            mask=("mask.png", mask, "image/png"),
            prompt="a red boat",
            size="256x256",
            quality="high",
        )
        merged = await client.images.edit(
            image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
            prompt="both",
            size="256x256",
            response_format="url",
        )
        varied = await client.images.create_variation(
            image=("a.png", first, "image/png"), size="256x256", n=2
        )
        openai_upstream.short_by = 1
        short = await client.images.edit(
            image=("a.png", first, "image/png"), prompt="three", size="256x256", n=3
        )
    assert pixels(b64_image(edited))[0] == (256, 256)
    assert merged.data is not None
    assert merged.data[0].url is not None
    assert varied.data is not None
    assert len(varied.data) == 2
    assert short.data is not None
    assert len(short.data) == 2
    assert short.usage is not None
    calls = openai_upstream.api_requests()
    assert [call.path for call in calls] == ["/v1/images/edits"] * 2 + [
        "/v1/images/variations",
        "/v1/images/edits",
    ]
    assert calls[0].body["image"] == [first]
    assert calls[0].body["mask"] == [mask]
    assert calls[0].body["quality"] == ["high"]
    assert calls[1].body["image[]"] == [first, second]
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 1 + 1 + 2 + 2}  # delivered only


async def test_openai_upstream_streams_an_edit(
    make_gateway: MakeGateway, make_key: MakeKey, openai_upstream: OpenAIFake, db
):
    gateway = await make_gateway(
        {
            "backends": {
                "openai": {
                    "type": "openai",
                    "base_url": openai_upstream.base_url,
                    "api_key_env": "TEST_OPENAI_KEY",
                    "sizes": ["256x256"],
                }
            },
            "models": {"gpt-image-1": "openai"},
            "default_model": "gpt-image-1",
        }
    )
    key = await make_key()
    source, mask = pattern_png(64, 64), rgba_png(64, 64, (0, 0, 32, 32))
    inputs = {
        "image": ("a.png", source, "image/png"),
        "mask": ("mask.png", mask, "image/png"),
        "prompt": "a red boat",
        "size": "256x256",
        "input_fidelity": "high",
    }
    async with sdk(gateway, key.key) as client:
        stream = await client.images.edit(**inputs, stream=True, partial_images=1)
        events = [event async for event in stream]
        whole = await client.images.edit(**inputs)

    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    final = events[-1]
    assert isinstance(final, ImageEditCompletedEvent)
    assert final.usage.total_tokens == 100  # the upstream's own usage, passed on
    assert whole.data is not None
    assert final.b64_json == whole.data[0].b64_json
    streamed, plain = openai_upstream.api_requests()
    assert streamed.path == plain.path == "/v1/images/edits"
    assert streamed.body["stream"] == ["true"]
    assert streamed.body["partial_images"] == ["1"]
    assert streamed.body["input_fidelity"] == plain.body["input_fidelity"] == ["high"]
    assert streamed.body["mask"] == [mask]
    assert "stream" not in plain.body
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}
