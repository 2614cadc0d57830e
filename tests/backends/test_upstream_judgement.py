"""What an upstream says is judged right: a refused request is the client's 400, not an
outage; upstream failures open the breaker and fall back, visibly; n is split for
upstreams that take fewer images per call; request ids never carry a key."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import openai
import pytest
from aiohttp import web

from gateway.backends.local import render_png
from gateway.keys.format import generate_key
from tests.support.accounts import new_account, new_key
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.upstreams import serve_images_endpoint
from tests.support.usage import usage_rows

pytestmark = pytest.mark.usefixtures("db")

POLICY = {
    "error": {
        "message": "Your request was rejected as a result of our safety system.",
        "type": "invalid_request_error",
        "param": None,
        "code": "content_policy_violation",
    }
}


class Upstream:
    """An OpenAI-style images endpoint whose answer each test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.error: dict[str, Any] = {}
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        if self.status != 200:
            return web.json_response(self.error, status=self.status)
        width, height = (int(v) for v in body["size"].split("x"))
        data = [
            {"b64_json": base64.b64encode(render_png("x", i, width, height)).decode()}
            for i in range(body["n"])
        ]
        return web.json_response({"created": 0, "data": data})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    fake = Upstream()
    async with serve_images_endpoint(fake.handle) as url:
        fake.url = url
        yield fake


def config(upstream: Upstream, **backend: Any) -> dict[str, Any]:
    return {
        "backends": {
            "openai": {
                "type": "openai",
                "base_url": upstream.url,
                "retry_backoff_seconds": 0.01,
                "breaker_failures": 3,
                **backend,
            },
            "local": {"type": "local"},
        },
        "models": {"dall-e-3": ["openai", "local"], "other": ["openai", "local"]},
    }


async def charged(gateway: Gateway, db: asyncpg.Connection, key_id: Any) -> int:
    await gateway.flush()
    return sum((await usage_rows(db, key_id)).values())


@pytest.mark.parametrize(
    ("status", "error", "code", "param"),
    [
        (400, POLICY, "content_policy_violation", None),
        (
            422,
            {"error": {"message": "You must provide n=1 for this model.", "param": "n"}},
            "invalid_request",
            "n",
        ),
    ],
)
async def test_refusals_are_the_clients_400_and_never_open_the_breaker(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: Upstream,
    db: asyncpg.Connection,
    status: int,
    error: dict[str, Any],
    code: str,
    param: str | None,
):
    gateway = await make_gateway(config(upstream))
    key = await make_key("pro")
    upstream.status, upstream.error = status, error
    for _ in range(20):
        response = await gateway.generate(key.key, model="other")
        error_body = await expect_error(response, 400, code, param)
        assert "X-Gateway-Backend" not in response.headers  # no fallback answered
    assert "rejected" in error_body["message"] or "n=1" in error_body["message"]
    assert len(upstream.bodies) == 20  # not retried
    assert await charged(gateway, db, key.key_id) == 0

    # The breaker stayed closed: an unrelated customer is served by the upstream itself.
    upstream.status = 200
    other = await make_key("pro")
    response = await gateway.generate(other.key, model="other")
    assert response.status == 200, await response.text()
    assert response.headers["X-Gateway-Backend"] == "openai"


async def test_upstream_failures_open_the_breaker_and_the_fallback_says_so(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: Upstream, db: asyncpg.Connection
):
    gateway = await make_gateway(config(upstream, retries=0))
    key = await make_key("pro")
    upstream.status, upstream.error = 500, {"error": {"message": "boom"}}
    for _ in range(3):
        response = await gateway.generate(key.key, model="other")
        assert response.status == 200, await response.text()
        assert response.headers["X-Gateway-Backend"] == "local"
        assert (await response.json())["model"] == "other"  # the model the client asked for
    calls = len(upstream.bodies)
    response = await gateway.generate(key.key, model="other")  # breaker open: not called
    assert response.headers["X-Gateway-Backend"] == "local"
    assert len(upstream.bodies) == calls == 3
    assert await charged(gateway, db, key.key_id) == 4  # what was delivered


async def test_the_sdk_raises_bad_request_for_a_refusal_after_one_upstream_call(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: Upstream
):
    gateway = await make_gateway(config(upstream))
    key = await make_key("pro")
    upstream.status, upstream.error = 400, POLICY
    base_url = str(gateway.client.make_url("/v1"))
    async with openai.AsyncOpenAI(api_key=key.key, base_url=base_url) as client:  # retries on
        with pytest.raises(openai.BadRequestError) as caught:
            await client.images.generate(prompt="refused", model="dall-e-3", size="256x256")
    assert caught.value.code == "content_policy_violation"
    assert len(upstream.bodies) == 1


async def test_dall_e_3_with_n_3_is_three_upstream_calls_of_one(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: Upstream, db: asyncpg.Connection
):
    gateway = await make_gateway(config(upstream))
    key = await make_key("pro")
    response = await gateway.generate(key.key, model="dall-e-3", n=3, seed=7)
    assert response.status == 200, await response.text()
    assert len((await response.json())["data"]) == 3
    assert sorted(b["n"] for b in upstream.bodies) == [1, 1, 1]
    assert await charged(gateway, db, key.key_id) == 3


async def test_max_n_per_call_splits_and_partial_success_charges_what_was_delivered(
    make_gateway: MakeGateway, make_key: MakeKey, db: asyncpg.Connection
):
    calls: list[int] = []

    async def every_second_call_fails(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append(body["n"])
        if len(calls) % 2 == 0:
            return web.json_response({"error": {"message": "boom"}}, status=500)
        data = [
            {"b64_json": base64.b64encode(render_png("x", i, 256, 256)).decode()}
            for i in range(body["n"])
        ]
        return web.json_response({"created": 0, "data": data})

    async with serve_images_endpoint(every_second_call_fails) as url:
        gateway = await make_gateway(
            {
                "backends": {
                    "up": {"type": "http", "base_url": url, "max_n_per_call": 2, "retries": 0}
                },
                "models": {"up": "up"},
            }
        )
        key = await make_key("pro")
        response = await gateway.generate(key.key, model="up", n=4)
        assert response.status == 200, await response.text()
        assert sorted(calls) == [2, 2]
        assert len((await response.json())["data"]) == 2
        assert response.headers["x-ratelimit-remaining-images"] == "4998"
        assert await charged(gateway, db, key.key_id) == 2


@pytest.mark.parametrize("grace", [0, 3600])
async def test_a_rotated_key_cannot_be_rotated_again(app: Gateway, grace: int):
    account = await new_account(app)
    old = await new_key(app, account)
    first = await app.client.post(
        f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": grace}, headers=account.headers
    )
    assert first.status == 201, await first.text()
    successor = await first.json()
    again = await app.client.post(
        f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 0}, headers=account.headers
    )
    await expect_error(again, 409, "key_already_rotated")
    # The successor keeps the expiry its owner asked for (none), not the grace's end.
    listed = await (await app.client.get("/v1/keys", headers=account.headers)).json()
    [row] = [k for k in listed["data"] if k["id"] == successor["id"]]
    assert row["expires_at"] is None
    assert (await app.generate(successor["key"])).status == 200
    # The successor itself can be rotated.
    response = await app.client.post(
        f"/v1/keys/{successor['id']}/rotate", json={}, headers=account.headers
    )
    assert response.status == 201, await response.text()


async def test_a_request_id_that_looks_like_a_key_is_replaced(
    gateway: Gateway, make_key: MakeKey, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="gateway.access")
    key = await make_key()
    # The gateway's own prefix; and a whole key under another gateway's prefix
    # (random part and checksum computed over that prefix).
    foreign = generate_key("sk_live_")
    for sent in (key.key, key.key[:20], foreign):
        caplog.clear()
        response = await gateway.client.get(
            "/v1/models", headers={"Authorization": f"Bearer {key.key}", "X-Request-ID": sent}
        )
        assert response.status == 200
        assert response.headers["X-Request-ID"] != sent
        [line] = [r for r in caplog.records if r.name == "gateway.access"]
        assert line.request_id == response.headers["X-Request-ID"]  # type: ignore[attr-defined]
        assert sent not in caplog.text
    sane = "req-2026-12-07.abc:1"
    response = await gateway.client.get("/healthz", headers={"X-Request-ID": sane})
    assert response.headers["X-Request-ID"] == sane


async def test_model_fallback_never_keeps_a_model_to_its_first_backend(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: Upstream, db: asyncpg.Connection
):
    gateway = await make_gateway(
        {**config(upstream, retries=0), "model_fallback": {"dall-e-3": "never"}}
    )
    key = await make_key("pro")
    upstream.status, upstream.error = 500, {"error": {"message": "boom"}}
    response = await gateway.generate(key.key, model="dall-e-3")
    await expect_error(response, 502, "upstream_error")
    # The other model still falls back (the default: on upstream failures).
    response = await gateway.generate(key.key, model="other")
    assert response.status == 200, await response.text()
    assert response.headers["X-Gateway-Backend"] == "local"
    assert await charged(gateway, db, key.key_id) == 1
