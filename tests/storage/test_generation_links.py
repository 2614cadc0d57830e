"""``response_format: "url"``: generated images are stored and answered as signed links."""

from __future__ import annotations

import asyncio
import base64
import urllib.request
from typing import Any

import asyncpg
import openai
import pytest

from tests.storage.conftest import S3_ENV, MotoServer
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.usage import usage_rows

pytestmark = pytest.mark.usefixtures("db")


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the test's own link
        return response.status, dict(response.headers), response.read()


async def test_the_sdk_gets_links_that_fetch_the_same_png(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    base_url = str(gateway.client.make_url("/v1"))
    async with openai.AsyncOpenAI(api_key=key.key, base_url=base_url, max_retries=0) as client:
        linked = await client.images.generate(
            prompt="a red kite", n=2, size="256x256", response_format="url", extra_body={"seed": 5}
        )
        inline = await client.images.generate(
            prompt="a red kite",
            n=2,
            size="256x256",
            response_format="b64_json",
            extra_body={"seed": 5},
        )
    assert [image.b64_json for image in linked.data] == [None, None]
    for image, same in zip(linked.data, inline.data, strict=True):
        assert image.url is not None
        assert image.url.startswith(str(gateway.client.make_url("/v1/files/")))
        status, headers, body = await asyncio.to_thread(fetch, image.url)  # no API key
        assert status == 200
        assert headers["Content-Type"] == "image/png"
        assert int(headers["Content-Length"]) == len(body)
        assert body == base64.b64decode(same.b64_json or "")


async def test_a_tampered_link_is_refused(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.generate(key.key, response_format="url")
    assert response.status == 200, await response.text()
    [item] = (await response.json())["data"]
    assert set(item) == {"url", "revised_prompt"}
    tampered = item["url"].replace("signature=", "signature=A")
    answer = await gateway.client.get(tampered[tampered.index("/v1/files/") :])
    await expect_error(answer, 403, "invalid_signature")


async def test_a_store_that_fails_answers_503_and_charges_nothing(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    private_moto: MotoServer,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
):
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = private_moto.new_bucket()
    storage: dict[str, Any] = {
        "url": f"s3://{bucket}/images",
        "options": {
            "endpoint": private_moto.endpoint,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key_env": "STORAGE_TEST_S3_SECRET",
            "client_options": {"allow_http": True, "timeout": "2s", "connect_timeout": "1s"},
        },
    }
    gateway = await make_gateway({"storage": storage})
    key = await make_key()
    response = await gateway.generate(key.key, response_format="url", n=2)
    assert response.status == 200, await response.text()

    private_moto.stop()  # the store goes away
    response = await gateway.generate(key.key, response_format="url", n=2)
    await expect_error(response, 503, "storage_unavailable")
    response = await gateway.generate(key.key, n=1)  # base64 still works without the store
    assert response.status == 200, await response.text()
    await gateway.flush()
    assert sum((await usage_rows(db, key.key_id)).values()) == 3  # 2 + 0 + 1
