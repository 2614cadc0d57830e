"""What crosses to an upstream and back: the client's credentials never go upstream, the
upstream's key never reaches the client or another host, and a hostile upstream (echoing,
redirecting, flooding) gets a 502.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.accounts.tokens import TokenIssuer
from gateway.backends.local import render_png
from gateway.keys.format import RANDOM_LENGTH
from tests.support.config import JWT_SECRET, KEY_PREFIX, merge
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import ANY, expect_error
from tests.support.upstreams import FakeUpstream, serve_images_endpoint, upstream_config

CLIENT_CREDENTIAL_HEADERS = ("Cookie", "X-API-Key", "Proxy-Authorization")


async def test_client_credentials_never_reach_the_upstream(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
):
    upstream_secret = "upstream-sk-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", upstream_secret)
    config = merge(
        upstream_config(fake_upstream),
        {"backends": {"remote": {"api_key_env": "GW_TEST_UPSTREAM_KEY"}}},
    )
    gateway = await make_gateway(config)
    key = await make_key()
    token = TokenIssuer([JWT_SECRET], 3600).issue(str(key.user_id))
    body = {"prompt": "p", "size": "256x256", "model": "remote"}
    extra = {
        "Cookie": f"session={token}; api_key={key.key}",
        "Proxy-Authorization": f"Bearer {key.key}",
        "X-Forwarded-Authorization": f"Bearer {key.key}",
        "X-Access-Token": token,
    }
    for credential in ({"Authorization": f"Bearer {key.key}"}, {"X-API-Key": key.key}):
        response = await gateway.client.post(
            "/v1/images/generations", json=body, headers={**credential, **extra}
        )
        assert response.status == 200, await response.text()
    assert len(fake_upstream.requests) == 2
    for sent in fake_upstream.requests:
        headers = CIMultiDict(sent["headers"])
        assert headers["Authorization"] == f"Bearer {upstream_secret}"
        for name in (*CLIENT_CREDENTIAL_HEADERS, "X-Forwarded-Authorization", "X-Access-Token"):
            assert name not in headers
        everything = repr(sent)
        assert key.key not in everything
        assert token not in everything
        assert key.key[len(KEY_PREFIX) : len(KEY_PREFIX) + RANDOM_LENGTH] not in everything


async def test_without_an_upstream_key_no_authorization_goes_upstream(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    assert (await gateway.generate(key.key, model="remote")).status == 200
    (sent,) = fake_upstream.requests
    assert "Authorization" not in CIMultiDict(sent["headers"])
    assert key.key not in repr(sent)


@contextlib.asynccontextmanager
async def echoing_upstream() -> AsyncIterator[str]:
    """A hostile upstream that answers every call with the credentials it was sent."""

    async def handle(request: web.Request) -> web.Response:
        echoed = dict(request.headers)
        return web.json_response(
            {"error": {"message": f"bad key {echoed.get('Authorization')}", "echo": echoed}},
            status=401,
            headers={"X-Echo-Authorization": echoed.get("Authorization", "")},
        )

    async with serve_images_endpoint(handle) as url:
        yield url


async def test_an_upstream_echoing_its_key_does_not_show_it_to_the_client(
    make_gateway: MakeGateway, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch
):
    upstream_secret = "upstream-sk-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", upstream_secret)
    async with echoing_upstream() as url:
        upstream = FakeUpstream(url=url)
        config = merge(
            upstream_config(upstream),
            {"backends": {"remote": {"api_key_env": "GW_TEST_UPSTREAM_KEY", "retries": 0}}},
        )
        gateway = await make_gateway(config)
        key = await make_key()
        response = await gateway.generate(key.key, model="remote")
        await expect_error(response, 502, "upstream_error", ANY)
        assert upstream_secret not in await response.text()
        assert not any(upstream_secret in value for value in response.headers.values())


@contextlib.asynccontextmanager
async def redirecting_upstream(location: str, status: int = 307) -> AsyncIterator[str]:
    """A hostile upstream that sends every call on to ``location``."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location})

    async with serve_images_endpoint(handle) as url:
        yield url


async def redirected_call(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    target: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
) -> tuple[Any, str]:
    upstream_secret = "upstream-sk-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", upstream_secret)
    async with redirecting_upstream(f"{target.url}/images/generations", status) as url:
        config = merge(
            upstream_config(FakeUpstream(url=url)),
            {"backends": {"remote": {"api_key_env": "GW_TEST_UPSTREAM_KEY", "retries": 0}}},
        )
        gateway = await make_gateway(config)
        key = await make_key()
        response = await gateway.generate(key.key, model="remote")
        await response.read()
    return response, upstream_secret


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_an_upstream_redirect_never_carries_the_upstream_key_to_another_host(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    second_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
):
    response, upstream_secret = await redirected_call(
        make_gateway, make_key, second_upstream, monkeypatch, status
    )
    assert response.status != 500
    for sent in second_upstream.requests:
        assert upstream_secret not in repr(sent)
        assert "Authorization" not in CIMultiDict(sent["headers"])


async def test_an_upstream_redirect_is_not_followed(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    second_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
):
    response, _ = await redirected_call(make_gateway, make_key, second_upstream, monkeypatch, 307)
    assert not second_upstream.requests, "the gateway followed the upstream's redirect"
    assert response.status == 502


@contextlib.asynccontextmanager
async def bloated_upstream(padding: int) -> AsyncIterator[str]:
    """A hostile upstream whose valid answer is followed by ``padding`` bytes of spaces."""
    image = base64.b64encode(render_png("p", 0, 256, 256)).decode()
    answer = orjson.dumps({"created": 0, "data": [{"b64_json": image}]}) + b" " * padding

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    async with serve_images_endpoint(handle) as url:
        yield url


async def test_an_oversized_upstream_answer_is_refused(
    make_gateway: MakeGateway, make_key: MakeKey
):
    async with bloated_upstream(64 * 1024 * 1024) as url:
        config = merge(
            upstream_config(FakeUpstream(url=url)), {"backends": {"remote": {"retries": 0}}}
        )
        gateway = await make_gateway(config)
        key = await make_key()
        response = await gateway.generate(key.key, model="remote")
        await expect_error(response, 502, "upstream_error", ANY)
