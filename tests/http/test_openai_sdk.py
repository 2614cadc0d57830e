"""The official openai SDK works against the gateway unchanged."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.support.gateway import Gateway, MakeKey


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
