"""The official openai SDK works against the gateway unchanged."""

from __future__ import annotations

import base64

import openai
import pytest
from aiohttp.test_utils import TestServer
from openai.types import ImageGenCompletedEvent

from tests.support.backend_cases import OPENAI_KEY
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.providers import OpenAIFake
from tests.support.upstreams import serve_fake_upstream, upstream_config


def sdk(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    base_url = str(gateway.client.make_url("/v1"))
    return openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0)


async def test_images_generate(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        result = await client.images.generate(prompt="a red kite", n=2, size="256x256")
    assert len(result.data) == 2
    for image in result.data:
        assert image.b64_json is not None
        assert base64.b64decode(image.b64_json)[:8] == b"\x89PNG\r\n\x1a\n"


async def test_images_generate_with_model_and_raw_headers(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        raw = await client.images.with_raw_response.generate(
            prompt="a blue kite", model="local", size="512x512", response_format="b64_json"
        )
    assert raw.headers["x-ratelimit-remaining-requests"] == "9"
    assert raw.headers["x-request-id"]
    assert len(raw.parse().data) == 1


async def test_models_list(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        models = await client.models.list()
    assert [m.id for m in models.data] == ["local"]


async def test_errors_map_to_sdk_exceptions(gateway: Gateway, make_key: MakeKey):
    key = await make_key(requests_per_minute=1)
    async with sdk(gateway, key.key) as client:
        await client.images.generate(prompt="one", size="256x256")
        with pytest.raises(openai.RateLimitError) as limited:
            await client.images.generate(prompt="two", size="256x256")
        assert limited.value.code == "rate_limit_exceeded"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.generate(prompt="three", size="3x3")
        assert bad.value.param == "size"
    async with sdk(gateway, "nb_test_wrong") as client:
        with pytest.raises(openai.AuthenticationError) as denied:
            await client.images.generate(prompt="four")
        assert denied.value.code == "invalid_api_key"


async def test_images_generate_streams_partial_images_in_order(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        stream = await client.images.generate(
            prompt="a red kite",
            size="256x256",
            stream=True,
            partial_images=2,
            extra_body={"seed": 11},
        )
        events = [event async for event in stream]
        whole = await client.images.generate(
            prompt="a red kite", size="256x256", extra_body={"seed": 11}
        )

    assert [type(event).__name__ for event in events] == [
        "ImageGenPartialImageEvent",
        "ImageGenPartialImageEvent",
        "ImageGenCompletedEvent",
    ]
    assert [getattr(event, "partial_image_index", None) for event in events] == [0, 1, None]
    final = events[-1]
    assert isinstance(final, ImageGenCompletedEvent)
    assert final.type == "image_generation.completed"
    assert final.b64_json == whole.data[0].b64_json
    assert final.usage.model_extra == {"images": 1}


async def test_images_generate_streams_through_the_openai_backend(
    make_gateway: MakeGateway, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TEST_OPENAI_KEY", OPENAI_KEY)
    fake = OpenAIFake(OPENAI_KEY)
    server = TestServer(fake.app())
    await server.start_server()
    fake.origin = str(server.make_url("")).rstrip("/")
    try:
        gateway = await make_gateway(
            {
                "backends": {
                    "openai": {
                        "type": "openai",
                        "base_url": fake.base_url,
                        "api_key_env": "TEST_OPENAI_KEY",
                        "sizes": ["256x256"],
                    }
                },
                "models": {"gpt-image-1": "openai"},
            }
        )
        key = await make_key()
        async with sdk(gateway, key.key) as client:
            stream = await client.images.generate(
                model="gpt-image-1",
                prompt="a red kite",
                size="256x256",
                stream=True,
                partial_images=1,
                quality="low",
            )
            events = [event async for event in stream]
            whole = await client.images.generate(
                model="gpt-image-1", prompt="a red kite", size="256x256", quality="low"
            )
    finally:
        await server.close()

    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    final = events[-1]
    assert isinstance(final, ImageGenCompletedEvent)
    assert final.quality == "low"
    assert final.usage.total_tokens == 100
    assert final.b64_json == whole.data[0].b64_json
    assert fake.api_requests()[0].body["quality"] == "low"


async def test_images_generate_parameters(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    async with sdk(gateway, key.key) as client:
        result = await client.images.generate(
            prompt="a red kite", size="auto", quality="auto", moderation="low", user="u-1"
        )
        assert base64.b64decode(result.data[0].b64_json or "")[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.generate(prompt="a red kite", size="256x256", quality="hd")
        assert bad.value.param == "quality"
        assert "it accepts: auto" in bad.value.message


async def test_a_failure_mid_stream_raises_in_the_sdk(make_gateway: MakeGateway, make_key: MakeKey):
    async with serve_fake_upstream(handler_cancellation=True) as upstream:
        upstream.mode = "stream_hang"  # the second image never comes
        gateway = await make_gateway(upstream_config(upstream, timeout=0.5))
        key = await make_key()
        async with sdk(gateway, key.key) as client:
            stream = await client.images.generate(
                model="remote", prompt="a red kite", size="256x256", n=2, stream=True
            )
            first = await anext(aiter(stream))
            with pytest.raises(openai.APIError) as failed:
                await anext(aiter(stream))
    assert first.type == "image_generation.completed"
    assert failed.value.message == "The image backend did not answer in time."
    assert failed.value.code == "upstream_timeout"
