"""Image URLs from an upstream's answer never reach the gateway's own network.

An ``openai``-type backend points at a fake upstream that answers with
``{"data": [{"url": ...}]}``; the URLs point at listeners that count the TCP
connections they accept. Whatever the target, a refused download is the same 502
(one fixed message), nothing reaches the listener, and nothing is charged. The
backend's own ``base_url`` is on 127.0.0.1 too: the operator configured it, so API
calls to it are not subject to the policy.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.backends.upstream import IMAGE_FETCH_FAILED
from gateway.media.inspect import inspect_image
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.images import png
from tests.support.listeners import Answer, Listener
from tests.support.upstreams import serve_images_endpoint
from tests.support.usage import today, usage_rows

IMAGE = png(256, 256)


class UrlUpstream:
    """An OpenAI-compatible upstream whose images are the URLs in ``urls``."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"created": 0, "data": [{"url": url} for url in self.urls]})


@pytest.fixture
async def upstream() -> AsyncIterator[UrlUpstream]:
    fake = UrlUpstream()
    async with serve_images_endpoint(fake.handle) as base_url:
        fake.base_url = base_url
        yield fake


@pytest.fixture
async def inside() -> AsyncIterator[Listener]:
    """A service on the gateway's loopback (both families), one port: it must never be
    reached. It would answer with a perfectly good image."""
    listener = await Listener("127.0.0.1", "::1").start()
    listener.routes["/internal.png"] = Answer(200, IMAGE, {"Content-Type": "image/png"})
    yield listener
    await listener.close()


def remote(upstream: UrlUpstream, allow: list[str] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backends": {
            "remote": {
                "type": "openai",
                "base_url": upstream.base_url,
                "model": "dall-e-2",
                "timeout_seconds": 5,
                "retries": 0,
                "breaker_failures": 0,
            }
        },
        "models": {"remote": "remote"},
    }
    if allow is not None:
        config["egress"] = {"allow": allow}
    return config


async def assert_refused(response: Any) -> None:
    error = await expect_error(response, 502, "upstream_error")
    assert error["message"] == IMAGE_FETCH_FAILED


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "localhost", "[::ffff:127.0.0.1]", "127.1", "2130706433"],
)
async def test_urls_into_loopback_are_refused_and_never_connected(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: UrlUpstream,
    inside: Listener,
    db: Any,
    caplog: pytest.LogCaptureFixture,
    host: str,
) -> None:
    upstream.urls = [f"http://{host}:{inside.port}/internal.png?token=s3cr3t"]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    with caplog.at_level(logging.WARNING, logger="gateway.backends"):
        response = await gateway.generate(key.key, model="remote")

    await assert_refused(response)
    assert inside.accepts == 0
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "gateway.backends")
    assert "image download from" in logged
    assert "s3cr3t" not in logged
    assert "token=" not in logged


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.7/internal.png", "10.0.0.7 (private)"),
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 (link-local)"),
        ("http://[fe80::1]/x.png", "fe80::1 (link-local)"),
        ("http://100.64.0.1/x.png", "100.64.0.1 (shared address space (CGNAT))"),
        ("http://[fd00::2]/x.png", "fd00::2 (unique-local)"),
        ("http://0.0.0.0:6379/", "0.0.0.0 (unspecified)"),
    ],
)
async def test_urls_into_private_and_link_local_networks_are_refused_before_connecting(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: UrlUpstream,
    db: Any,
    caplog: pytest.LogCaptureFixture,
    url: str,
    reason: str,
) -> None:
    """No listener can live at these addresses here; the log shows that the policy
    refused the address itself, before any socket was made for it."""
    upstream.urls = [url]
    gateway = await make_gateway(remote(upstream))
    key = await make_key()

    with caplog.at_level(logging.WARNING, logger="gateway.backends"):
        response = await gateway.generate(key.key, model="remote")

    await assert_refused(response)
    assert any(f"egress policy refuses {reason}" in r.getMessage() for r in caplog.records)
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})


async def test_a_redirect_from_an_allowed_host_into_loopback_is_refused(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: UrlUpstream,
    inside: Listener,
    db: Any,
) -> None:
    cdn = await Listener("127.0.0.2").start()  # the operator's own (allowed) image host
    try:
        cdn.routes["/a.png"] = Answer(302, headers={"Location": "/b.png"})
        cdn.routes["/b.png"] = Answer(302, headers={"Location": inside.url("/internal.png")})
        upstream.urls = [cdn.url("/a.png")]
        gateway = await make_gateway(remote(upstream, allow=["127.0.0.2"]))
        key = await make_key()

        response = await gateway.generate(key.key, model="remote")
    finally:
        await cdn.close()

    await assert_refused(response)
    assert cdn.accepts == 2
    assert inside.accepts == 0
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})


@pytest.mark.parametrize("allow", [["127.0.0.1"], ["127.0.0.0/8", "::1"], ["localhost"]])
async def test_the_allow_list_lets_a_private_image_host_through(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: UrlUpstream,
    inside: Listener,
    db: Any,
    allow: list[str],
) -> None:
    host = "localhost" if allow == ["localhost"] else "127.0.0.1"
    upstream.urls = [inside.url("/internal.png", host), inside.url("/internal.png", host)]
    gateway = await make_gateway(remote(upstream, allow=allow))
    key = await make_key()

    response = await gateway.generate(key.key, model="remote", n=2)

    assert response.status == 200, await response.text()
    body = await response.json()
    assert [base64.b64decode(item["b64_json"]) for item in body["data"]] == [IMAGE, IMAGE]
    assert inspect_image(IMAGE).width == 256
    assert body["usage"] == {"images": 2}
    assert inside.accepts == 2
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_every_failure_gives_the_same_message(
    make_gateway: MakeGateway, make_key: MakeKey, upstream: UrlUpstream, inside: Listener
) -> None:
    """Status codes, connection errors, sizes and contents cannot be told apart: the
    answers are no oracle for the network behind an allowed range."""
    inside.routes["/forbidden"] = Answer(403, b"no")
    inside.routes["/not-an-image"] = Answer(200, b"<html>admin console</html>")
    inside.routes["/fake.png"] = Answer(200, b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    inside.routes["/loop"] = Answer(302, headers={"Location": "/loop"})
    inside.routes["/ftp"] = Answer(302, headers={"Location": "ftp://127.0.0.1/x"})
    inside.routes["/nowhere"] = Answer(302, headers={"Location": "http://[::1"})
    closed = Listener("127.0.0.1")
    await closed.start()
    await closed.close()  # nothing listens on its port any more
    targets = [
        inside.url("/forbidden"),
        inside.url("/missing"),
        inside.url("/not-an-image"),
        inside.url("/fake.png"),
        inside.url("/loop"),
        inside.url("/ftp"),
        inside.url("/nowhere"),
        closed.url("/x.png"),
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ]
    gateway = await make_gateway(remote(upstream, allow=["127.0.0.1"]))
    key = await make_key("pro")
    answers = set()
    for target in targets:
        upstream.urls = [target]
        response = await gateway.generate(key.key, model="remote")
        answers.add((response.status, (await response.json())["error"]["message"]))

    assert answers == {(502, IMAGE_FETCH_FAILED)}


async def test_one_refused_url_among_good_ones_delivers_and_charges_the_good_ones(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    upstream: UrlUpstream,
    inside: Listener,
    db: Any,
) -> None:
    cdn = await Listener("127.0.0.2").start()
    try:
        cdn.routes["/ok.png"] = Answer(200, IMAGE)
        upstream.urls = [cdn.url("/ok.png"), inside.url("/internal.png"), cdn.url("/ok.png")]
        gateway = await make_gateway(remote(upstream, allow=["127.0.0.2"]))
        key = await make_key()

        response = await gateway.generate(key.key, model="remote", n=3)
    finally:
        await cdn.close()

    assert response.status == 200
    body = await response.json()
    assert len(body["data"]) == 2
    assert body["usage"] == {"images": 2}
    assert inside.accepts == 0
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}
