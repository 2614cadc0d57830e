"""Hostile framing: oversized headers, and lies about the body (no length, a length
shorter or longer than the body, conflicting framing), or no HTTP/1.1 at all.

Every test talks to a real ``gateway serve`` process (the module's ``served``), over raw
sockets, because a client library refuses to send most of this. A bad request is a 4xx
(an OpenAI-shaped JSON error where the gateway's own code answers), never a 5xx, and the
server stays healthy for the next client on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import aiohttp
import pytest

from tests.support.gateway import MakeKey
from tests.support.processes import Served
from tests.support.raw_http import (
    GENERATION_BODY,
    PROMPT_ANSWER_SECONDS,
    RawResponse,
    assert_healthy,
    check_error,
    converse,
    exchange,
    http_request,
    json_auth,
    read_response,
)

pytestmark = pytest.mark.slow


# -- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        http_request("GET", "/healthz", headers=[("X-Big", "a" * 100_000)]),
        http_request("GET", "/healthz", headers=[("X-" + "b" * 100_000, "v")]),
        http_request("POST", "/v1/images/generations", headers=[("Cookie", "c=" + "x" * 100_000)]),
        http_request("GET", "/healthz", headers=[(f"X-H{i}", "v") for i in range(1000)]),
        http_request("GET", "/" + "p" * 100_000),
    ],
    ids=["100kb-value", "100kb-name", "100kb-cookie", "1000-headers", "100kb-path"],
)
async def test_oversized_headers_are_refused_and_harmless(
    served: Served, make_key: MakeKey, request_bytes: bytes
):
    response = await exchange(served.port, request_bytes)
    assert response.status in (400, 414, 431), response.raw_head
    await assert_healthy(served, (await make_key("pro")).key)


# -- lies about the body -------------------------------------------------------------------


async def send_in_two_parts(port: int, first: bytes, second: bytes) -> list[RawResponse]:
    """Send ``first``, read the answer it gets, then send ``second`` and read the rest."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first)
        await writer.drain()
        responses = [await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)]
        with contextlib.suppress(ConnectionError):
            writer.write(second + b"\r\n\r\n")
            await writer.drain()
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                responses.append(
                    await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
                )
    finally:
        writer.close()
    return responses


async def test_a_body_without_content_length_is_not_a_body(served: Served, make_key: MakeKey):
    """No Content-Length and no chunking: the request has no body (the gateway's 400),
    and the bytes that follow are read as the next request (a 4xx); never a 5xx."""
    key = await make_key("pro")
    head = http_request("POST", "/v1/images/generations", headers=json_auth(key.key), close=False)
    responses = await send_in_two_parts(served.port, head, GENERATION_BODY)
    check_error(responses[0], 400, "invalid_request")
    assert len(responses) == 2
    assert all(400 <= r.status < 500 for r in responses)
    await assert_healthy(served, key.key)


async def test_a_content_length_shorter_than_the_body(served: Served, make_key: MakeKey):
    key = await make_key("pro")
    head = http_request(
        "POST", "/v1/images/generations", headers=json_auth(key.key), content_length=10, close=False
    )
    responses = await send_in_two_parts(
        served.port, head + GENERATION_BODY[:10], GENERATION_BODY[10:]
    )
    check_error(responses[0], 400, "invalid_request")  # the first 10 bytes are not JSON
    assert len(responses) == 2
    assert all(400 <= r.status < 500 for r in responses)
    await assert_healthy(served, key.key)


@pytest.mark.parametrize(
    "request_bytes",
    [
        http_request("POST", "/v1/images/generations", headers=[("Content-Length", "5")] * 2),
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\n{}{}{}",
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n{}",
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"FFFFFFFFFFFFFFFFFFFF\r\n",
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked"
        b"\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad\x01Name: v\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n Folded: continuation\r\n\r\n",
    ],
    ids=[
        "duplicate-content-length",
        "conflicting-content-lengths",
        "negative-content-length",
        "non-numeric-content-length",
        "content-length-and-chunked",
        "chunk-size-overflow",
        "obfuscated-transfer-encoding",
        "garbage-request-line",
        "unknown-http-version",
        "http2-preface",
        "tls-hello",
        "control-char-in-name",
        "obsolete-line-folding",
    ],
)
async def test_malformed_framing_is_a_4xx(served: Served, make_key: MakeKey, request_bytes: bytes):
    conversation = await converse(served.port, request_bytes)
    assert all(400 <= r.status < 500 for r in conversation.responses), [
        r.raw_head for r in conversation.responses
    ]
    await assert_healthy(served, (await make_key("pro")).key)


async def metric_samples(served: Served) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{served.url}/metrics") as response,
    ):
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("gateway_requests_total{"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], route: str, *, server_errors: bool = False) -> float:
    return sum(
        value
        for name, value in samples.items()
        if f'route="{route}"' in name and (not server_errors or 'status="5' in name)
    )


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/auth/login"])
@pytest.mark.parametrize("half_close", [False, True], ids=["close", "half-close"])
async def test_a_content_length_longer_than_the_body_then_close(
    served: Served, make_key: MakeKey, path: str, half_close: bool
):
    key = await make_key("pro")
    request_id = f"lying-{uuid.uuid4().hex}"
    data = http_request(
        "POST",
        path,
        headers=[*json_auth(key.key), ("X-Request-ID", request_id)],
        content_length=1000,
        close=False,
    )
    before = await metric_samples(served)
    if half_close:  # "no more from me", and wait for the answer
        conversation = await converse(served.port, data + GENERATION_BODY, half_close=True)
        assert all(r.status < 500 for r in conversation.responses)
    else:  # hang up
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(data + GENERATION_BODY)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    # The server counts the request when its handler ends: wait for that (bounded).
    for _ in range(500):
        after = await metric_samples(served)
        if total(after, path) > total(before, path):
            break
    await assert_healthy(served, key.key)
    assert total(after, path, server_errors=True) == total(before, path, server_errors=True)
    for line in served.log_text().splitlines():
        if request_id in line:
            assert '"level":"error"' not in line, line
