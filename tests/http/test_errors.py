"""Every error is JSON in OpenAI's shape, with the documented status and code."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.redis import PrivateRedis
from tests.support.upstreams import FakeUpstream, upstream_config


async def test_missing_api_key(gateway: Gateway):
    error = await expect_error(await gateway.generate(None), 401, "missing_api_key")
    assert error["type"] == "authentication_error"


@pytest.mark.parametrize(
    "key",
    [
        "nope",
        "nb_test_" + "A" * 38,  # right shape, wrong checksum
        "sk-" + "a" * 48,
    ],
)
async def test_malformed_keys_are_invalid(gateway: Gateway, key: str):
    await expect_error(await gateway.generate(key), 401, "invalid_api_key")


async def test_well_formed_unknown_key_is_invalid(gateway: Gateway):
    from gateway.keys.format import generate_key

    await expect_error(await gateway.generate(generate_key("nb_test_")), 401, "invalid_api_key")


async def test_authorization_header_must_be_bearer(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.client.post(
        "/v1/images/generations",
        json={"prompt": "p"},
        headers={"Authorization": f"Basic {key.key}"},
    )
    await expect_error(response, 401, "invalid_api_key")


async def test_key_in_query_string_is_refused(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.client.post(
        f"/v1/images/generations?api_key={key.key}", json={"prompt": "p"}
    )
    error = await expect_error(response, 400, "invalid_request", "api_key")
    assert key.key not in error["message"]


async def test_revoked_key(gateway: Gateway, make_key: MakeKey, db: Any):
    key = await make_key()
    await db.execute("UPDATE api_keys SET is_active = false WHERE id = $1", key.key_id)
    await expect_error(await gateway.generate(key.key), 401, "api_key_revoked")


async def test_expired_key(gateway: Gateway, make_key: MakeKey):
    key = await make_key(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    await expect_error(await gateway.generate(key.key), 401, "api_key_expired")


async def test_key_expiring_later_works_until_then(make_gateway: MakeGateway, make_key: MakeKey):
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    key = await make_key(expires_at=expires)
    clock = [expires.timestamp() - 1]
    gateway = await make_gateway(wall_clock=lambda: clock[0])
    assert (await gateway.generate(key.key)).status == 200
    clock[0] = expires.timestamp()
    await expect_error(await gateway.generate(key.key), 401, "api_key_expired")


async def test_disabled_account(gateway: Gateway, make_key: MakeKey):
    key = await make_key(user_active=False)
    error = await expect_error(await gateway.generate(key.key), 403, "account_disabled")
    assert error["type"] == "permission_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "p", "n": 0}, "n"),
        ({"prompt": "p", "n": 5}, "n"),  # free plan: at most 4 per request
        ({"prompt": "p", "n": "2"}, "n"),
        ({"prompt": "p", "n": True}, "n"),
        ({"prompt": "p", "n": 1.5}, "n"),
        ({"prompt": "p", "size": "big"}, "size"),
        ({"prompt": "p", "size": "1024x"}, "size"),
        ({"prompt": "p", "size": 1024}, "size"),
        ({"prompt": "p", "size": "999x999"}, "size"),
        ({"prompt": "p", "response_format": "png"}, "response_format"),
        ({"prompt": "p", "seed": -1}, "seed"),
        ({"prompt": "p", "seed": 2**64}, "seed"),
        ({"prompt": "p", "seed": "7"}, "seed"),
        ({"prompt": "p", "negative_prompt": 3}, "negative_prompt"),
        ({"prompt": "p", "model": 3}, "model"),
    ],
)
async def test_invalid_request_names_the_field(
    gateway: Gateway, make_key: MakeKey, body: dict[str, Any], param: str
):
    key = await make_key()
    response = await gateway.client.post(
        "/v1/images/generations", json=body, headers={"Authorization": f"Bearer {key.key}"}
    )
    error = await expect_error(response, 400, "invalid_request", param)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe{"])
async def test_body_that_is_not_a_json_object(gateway: Gateway, make_key: MakeKey, raw: bytes):
    key = await make_key()
    response = await gateway.client.post(
        "/v1/images/generations",
        data=raw,
        headers={"Authorization": f"Bearer {key.key}", "Content-Type": "application/json"},
    )
    await expect_error(response, 400, "invalid_request")


async def test_payload_too_large(gateway: Gateway, make_key: MakeKey):
    key = await make_key()  # the test config allows 64 KiB
    response = await gateway.client.post(
        "/v1/images/generations",
        data=b"{" + b" " * 70_000 + b"}",
        headers={"Authorization": f"Bearer {key.key}", "Content-Type": "application/json"},
    )
    await expect_error(response, 413, "payload_too_large")


async def test_unknown_model(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    error = await expect_error(
        await gateway.generate(key.key, model="dall-e-9"), 404, "model_not_found", "model"
    )
    assert "dall-e-9" in error["message"]


async def test_rate_limit_exceeded(gateway: Gateway, make_key: MakeKey):
    key = await make_key(requests_per_minute=1)
    assert (await gateway.generate(key.key)).status == 200
    response = await gateway.generate(key.key)
    error = await expect_error(response, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_daily_quota_exceeded(gateway: Gateway, make_key: MakeKey):
    key = await make_key(images_per_day=2)
    assert (await gateway.generate(key.key, n=2)).status == 200
    response = await gateway.generate(key.key)
    await expect_error(response, 429, "daily_quota_exceeded")
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    assert abs(int(response.headers["Retry-After"]) - (midnight - now).total_seconds()) <= 5
    assert response.headers["x-ratelimit-remaining-images"] == "0"


async def test_upstream_error(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.mode = "fail"
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    error = await expect_error(
        await gateway.generate(key.key, model="remote"), 502, "upstream_error"
    )
    assert "500" in error["message"]


async def test_upstream_garbage_is_an_upstream_error(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.mode = "garbage"
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    await expect_error(await gateway.generate(key.key, model="remote"), 502, "upstream_error")


async def test_upstream_timeout(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.mode = "hang"
    gateway = await make_gateway(upstream_config(fake_upstream, timeout=0.3))
    key = await make_key()
    await expect_error(await gateway.generate(key.key, model="remote"), 504, "upstream_timeout")


async def test_redis_unreachable_fails_closed(
    make_gateway: MakeGateway, make_key: MakeKey, private_redis: PrivateRedis
):
    gateway = await make_gateway({"redis": {"url": private_redis.url}})
    key = await make_key()
    assert (await gateway.generate(key.key)).status == 200  # the key is now cached locally
    private_redis.stop()
    error = await expect_error(await gateway.generate(key.key), 503, "service_unavailable")
    assert "retry" in error["message"].lower()
    ready = await gateway.client.get("/readyz")
    assert ready.status == 503
    body = await ready.json()
    assert body["checks"]["redis"].startswith("unreachable")
    assert body["checks"]["postgres"] == "ok"
    assert body["error"]["code"] == "service_unavailable"


async def test_unknown_path_and_method(gateway: Gateway):
    await expect_error(await gateway.client.get("/v2/nothing"), 404, "not_found")
    response = await gateway.client.get("/v1/images/generations")
    await expect_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
