"""Hostile input at the socket: malformed bodies and headers, lies, slow and idle clients.

Every test talks to a real ``gateway serve`` process (one per module, on 127.0.0.1),
mostly over raw sockets, because a client library refuses to send most of this. The
rules checked throughout: a bad request is a 4xx (an OpenAI-shaped JSON error where the
gateway's own code answers), never a 5xx, and the server stays healthy for the next
client on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from gateway.accounts.tokens import TokenIssuer
from tests.conftest import ADMIN_TOKEN, JWT_SECRET, REDIS_URL, MakeKey, base_raw_config
from tests.processes import running_gateway

pytestmark = pytest.mark.slow

#: The module's gateway accepts bodies up to this size (big enough for 100,000 '[').
MAX_BODY = 256 * 1024
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: What a well-behaved server must answer within, for a request that needs no upstream.
PROMPT_ANSWER_SECONDS = 5.0
#: How long a server may let a client take to send its request headers or body.
REQUEST_READ_DEADLINE = 10.0
#: The module's gateway's server.header_read_timeout_seconds: within the deadline above.
HEADER_READ_TIMEOUT = 4.0
IDLE_CONNECTIONS = 2000


# -- the gateway under test ---------------------------------------------------------


@dataclass
class Served:
    url: str
    port: int
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if soft == resource.RLIM_INFINITY else soft


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_prefix: str
) -> AsyncIterator[Served]:
    # Before the process starts, so that it inherits the limit (the idle-connection test).
    raise_open_file_limit(2 * IDLE_CONNECTIONS + 1024)
    raw = base_raw_config(database_url, REDIS_URL, redis_prefix)
    extra = {
        "server": {"max_body_bytes": MAX_BODY, "header_read_timeout_seconds": HEADER_READ_TIMEOUT},
        "logging": {"level": "DEBUG"},
        # A namespace of its own inside the run's, so 127.0.0.1's per-IP budgets are too.
        "redis": {"key_prefix": f"{redis_prefix}{uuid.uuid4().hex[:10]}:"},
        "auth": {"register_per_minute_per_ip": 10_000, "login_per_minute_per_ip": 10_000},
    }
    directory = tmp_path_factory.mktemp("hostile")
    async with running_gateway(directory, raw, extra) as (url, _process):
        port = int(url.rsplit(":", 1)[1])
        yield Served(url, port, directory / f"gateway-{port}.log")


# -- raw HTTP/1.1 --------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes = b""
    raw_head: bytes = b""

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Conversation:
    """Everything a server said on one connection, up to its close (or our timeout)."""

    responses: list[RawResponse] = field(default_factory=list)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    body = b""
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    elif status >= 200 and status not in (204, 304):
        body = await reader.read()  # delimited by the close
    return RawResponse(status, headers, body, head)


async def converse(
    port: int, data: bytes, *, timeout: float = PROMPT_ANSWER_SECONDS, half_close: bool = False
) -> Conversation:
    """Send ``data`` on a fresh connection; read responses until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = Conversation()
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                response = await asyncio.wait_for(read_response(reader), remaining)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                break
            out.responses.append(response)
            if response.headers.get("Connection", "").lower() == "close":
                break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return out


async def exchange(port: int, data: bytes) -> RawResponse:
    """One request, one response (the request should say ``Connection: close``)."""
    conversation = await converse(port, data)
    assert conversation.responses, "the server sent no response"
    return conversation.responses[0]


def http_request(
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    content_length: int | None = None,
    close: bool = True,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def bearer(key: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]


def check_error(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    """``response`` is the gateway's own OpenAI-shaped error with ``status`` and ``code``."""
    assert response.status == status, (response.status, response.body[:500])
    assert response.headers.get("Content-Type", "").startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert "Traceback" not in error["message"]
    return dict(error)


async def assert_healthy(served: Served, key: str | None = None) -> None:
    """A normal request on a fresh connection is served at once."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/healthz") as response:
            assert response.status == 200
        if key is not None:
            async with session.post(
                f"{served.url}/v1/images/generations",
                json={"prompt": "still fine", "size": "256x256"},
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                assert response.status == 200, await response.text()


async def post_body(served: Served, key: str, body: bytes) -> RawResponse:
    return await exchange(
        served.port,
        http_request("POST", "/v1/images/generations", headers=bearer(key), body=body),
    )


# -- bodies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"prompt": "\xff\xfe"}',
        b'{"prompt": "caf\xc3"}',  # a truncated two-byte sequence
        b'{"prompt": "\xc0\xaf"}',  # an overlong '/'
        b'{"prompt": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b'{"prompt": "\\ud800"}',  # an escaped lone surrogate
        b"\xef\xbb\xbf\xff{}",
    ],
    ids=["ff-fe", "truncated", "overlong", "encoded-surrogate", "escaped-surrogate", "bom-ff"],
)
async def test_invalid_utf8_is_a_400(served: Served, make_key: MakeKey, body: bytes):
    key = await make_key("pro")
    check_error(await post_body(served, key.key, body), 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"prompt": "p", "n": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}",
        b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
    ],
    ids=["open-brackets", "balanced-brackets", "nested-field", "nested-objects"],
)
async def test_deeply_nested_json_is_a_400(served: Served, make_key: MakeKey, body: bytes):
    assert len(body) <= MAX_BODY
    key = await make_key("pro")
    check_error(await post_body(served, key.key, body), 400, "invalid_request")
    await assert_healthy(served, key.key)


@pytest.mark.parametrize(
    ("field_text", "param"),
    [
        ('"n": 1e308', "n"),
        ('"n": -1e308', "n"),
        (f'"n": {10**100}', "n"),
        (f'"n": {-(10**100)}', "n"),
        ('"n": 1e400', None),  # beyond a double: not JSON the gateway can read
        ('"n": 1.0', "n"),
        ('"n": NaN', None),
        ('"n": Infinity', None),
        (f'"seed": {2**64}', "seed"),
        (f'"seed": {2**63}', "seed"),
        (f'"seed": {10**100}', "seed"),
        ('"seed": 1e308', "seed"),
        ('"seed": -1', "seed"),
    ],
)
async def test_huge_numbers_are_a_400(
    served: Served, make_key: MakeKey, field_text: str, param: str | None
):
    key = await make_key("pro")
    body = ('{"prompt": "p", "size": "256x256", ' + field_text + "}").encode()
    error = check_error(await post_body(served, key.key, body), 400, "invalid_request")
    assert error["param"] == param


async def test_body_of_the_largest_seed_is_accepted(served: Served, make_key: MakeKey):
    """The other side of the boundary above: 2**63 - 1 is a valid seed."""
    key = await make_key("pro")
    body = orjson.dumps({"prompt": "p", "size": "256x256", "seed": 2**63 - 1})
    response = await post_body(served, key.key, body)
    assert response.status == 200, response.body[:300]


@pytest.mark.parametrize(
    ("method", "path", "body", "answers"),
    [
        pytest.param(
            "POST",
            "/v1/auth/register",
            {"email": "a\u0000b@example.com", "password": "password123"},
            {(400, "invalid_request")},
            id="register-email-nul",
        ),
        pytest.param(
            "POST",
            "/v1/auth/login",
            {"email": "a\u0000b@example.com", "password": "password123"},
            {(400, "invalid_request"), (401, "invalid_credentials")},
            id="login-email-nul",
        ),
        pytest.param(
            "POST",
            "/v1/keys",
            {"name": "a\u0000b"},
            {(400, "invalid_request")},
            id="key-name-nul",
        ),
        pytest.param(
            "POST",
            "/v1/keys",
            {"name": "n", "expires_at": "9999-12-31T23:59:59-23:59"},
            {(400, "invalid_request")},
            id="key-expiry-past-year-9999",
        ),
        pytest.param(
            "GET",
            "/admin/users?email=a%00b%40example.com",
            None,
            {(200, ""), (400, "invalid_request")},
            id="admin-email-nul",
        ),
        # The controls: NUL is harmless where it is not stored in a text column.
        pytest.param(
            "POST",
            "/v1/auth/register",
            {"email": "__EMAIL__", "password": "pass\u0000word123"},
            {(201, "")},
            id="register-password-nul",
        ),
        pytest.param(
            "POST",
            "/v1/images/generations",
            {"prompt": "a\u0000b", "size": "256x256"},
            {(200, "")},
            id="prompt-nul",
        ),
    ],
)
async def test_text_postgres_cannot_store_is_a_400(
    served: Served,
    make_key: MakeKey,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    answers: set[tuple[int, str]],
):
    key = await make_key("pro")
    token = TokenIssuer([JWT_SECRET], 3600).issue(str(key.user_id))
    if path.startswith("/admin"):
        credential = ADMIN_TOKEN
    elif path == "/v1/images/generations":
        credential = key.key
    else:
        credential = token
    raw = None
    if body is not None:
        text = orjson.dumps(body).decode().replace("__EMAIL__", f"{uuid.uuid4().hex}@example.com")
        raw = text.encode()
    response = await exchange(
        served.port, http_request(method, path, headers=bearer(credential), body=raw)
    )
    assert response.status < 500, response.body[:300]
    code = response.json()["error"]["code"] if response.status >= 400 else ""
    if code:
        check_error(response, response.status, code)
    assert (response.status, code) in answers, (response.status, response.body[:300])


# -- too large -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/auth/register"])
@pytest.mark.parametrize("expect_continue", [False, True])
async def test_a_10mb_body_is_refused_before_it_is_read(
    served: Served, make_key: MakeKey, path: str, expect_continue: bool
):
    """Content-Length says 10 MB; only the first 64 KB is sent, and the 413 still comes."""
    key = await make_key("pro")
    headers = bearer(key.key)
    if expect_continue:
        headers.append(("Expect", "100-continue"))
    head = http_request("POST", path, headers=headers, content_length=10 * 1024 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(head + b"{" + b" " * (64 * 1024 - 1))
        await writer.drain()
        response = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
        if expect_continue and response.status == 100:
            # An interim answer is allowed; the final one must come without the rest.
            response = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
    finally:
        writer.close()
    error = check_error(response, 413, "payload_too_large")
    assert str(MAX_BODY) in error["message"]
    await assert_healthy(served, key.key)


@pytest.mark.parametrize("chunk_size", [64 * 1024, 1000])
async def test_a_chunked_body_over_the_limit_is_a_413(
    served: Served, make_key: MakeKey, chunk_size: int
):
    """No Content-Length: twice the limit is sent in chunks, never the final chunk, and
    the 413 comes anyway (so it did not wait for the body's end)."""
    key = await make_key("pro")
    head = http_request(
        "POST",
        "/v1/images/generations",
        headers=[*bearer(key.key), ("Transfer-Encoding", "chunked")],
    )
    chunk = f"{chunk_size:x}\r\n".encode() + b" " * chunk_size + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    answer = asyncio.ensure_future(read_response(reader))
    sent = 0
    try:
        writer.write(head)
        while sent < 2 * MAX_BODY and not answer.done():
            writer.write(chunk)
            sent += chunk_size
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answer}, return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():
                drained.cancel()
                break
            if drained.exception() is not None:
                break  # the server closed its side: the answer is waiting
        response = await asyncio.wait_for(answer, PROMPT_ANSWER_SECONDS)
    finally:
        answer.cancel()
        writer.close()
    check_error(response, 413, "payload_too_large")
    await assert_healthy(served, key.key)


# -- headers -------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "names",
    [
        ("Authorization", "Authorization"),
        ("X-API-Key", "X-API-Key"),
        ("Authorization", "X-API-Key"),
        ("X-API-Key", "Authorization"),
    ],
    ids=["two-authorization", "two-x-api-key", "authorization-then-x-api-key", "reversed"],
)
async def test_two_different_keys_are_ambiguous_and_refused(
    served: Served, make_key: MakeKey, names: tuple[str, str]
):
    """Two keys in one request name two callers: a 400 ``invalid_request``, neither key
    is used (a 401 would do too, but 400 says what is wrong with the request)."""
    first, second = await make_key("pro"), await make_key("pro")

    def credential(name: str, key: str) -> str:
        return f"Bearer {key}" if name == "Authorization" else key

    headers: CIMultiDict[str] = CIMultiDict()
    headers.add(names[0], credential(names[0], first.key))
    headers.add(names[1], credential(names[1], second.key))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{served.url}/v1/images/generations",
            json={"prompt": "p", "size": "256x256"},
            headers=headers,
        ) as response,
    ):
        body = await response.json()
        assert response.status == 400, body
        assert body["error"]["code"] == "invalid_request"


async def test_the_same_key_twice_is_not_ambiguous(served: Served, make_key: MakeKey):
    """The boundary of the test above: one key sent twice names one caller."""
    key = await make_key("pro")
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("Authorization", f"Bearer {key.key}")
    headers.add("X-API-Key", key.key)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{served.url}/v1/images/generations",
            json={"prompt": "p", "size": "256x256"},
            headers=headers,
        ) as response,
    ):
        assert response.status in (200, 400), await response.text()


# -- lies about the body ----------------------------------------------------------------

_BODY = b'{"prompt": "p", "size": "256x256"}'


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
    head = http_request("POST", "/v1/images/generations", headers=bearer(key.key), close=False)
    responses = await send_in_two_parts(served.port, head, _BODY)
    check_error(responses[0], 400, "invalid_request")
    assert len(responses) == 2
    assert all(400 <= r.status < 500 for r in responses)
    await assert_healthy(served, key.key)


async def test_a_content_length_shorter_than_the_body(served: Served, make_key: MakeKey):
    key = await make_key("pro")
    head = http_request(
        "POST", "/v1/images/generations", headers=bearer(key.key), content_length=10, close=False
    )
    responses = await send_in_two_parts(served.port, head + _BODY[:10], _BODY[10:])
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
        headers=[*bearer(key.key), ("X-Request-ID", request_id)],
        content_length=1000,
        close=False,
    )
    before = await metric_samples(served)
    if half_close:  # "no more from me", and wait for the answer
        conversation = await converse(served.port, data + _BODY, half_close=True)
        assert all(r.status < 500 for r in conversation.responses)
    else:  # hang up
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(data + _BODY)
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


# -- credentials in the URL ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v1/images/generations", "api_key"),
        ("POST", "/v1/generate", "apikey"),
        ("GET", "/v1/models", "key"),
        ("GET", "/v1/models", "access_token"),
        pytest.param(
            "POST",
            "/v1/images/generations",
            "api-key",
        ),
        pytest.param(
            "GET",
            "/v1/models",
            "API_KEY",
        ),
    ],
)
async def test_a_key_in_the_query_string_is_refused_and_never_logged(
    served: Served, make_key: MakeKey, method: str, path: str, name: str
):
    key = await make_key("pro")
    data = http_request(
        method,
        f"{path}?{name}={key.key}&prompt=x",
        headers=[("Content-Type", "application/json")],
        body=_BODY if method == "POST" else None,
    )
    error = check_error(await exchange(served.port, data), 400, "invalid_request")
    assert key.key not in error["message"]
    # The same key in the URL of a request that also carries it properly.
    data = http_request(method, f"{path}?{name}={key.key}", headers=bearer(key.key), body=_BODY)
    check_error(await exchange(served.port, data), 400, "invalid_request")
    await assert_healthy(served)
    assert key.key not in served.log_text()


# -- request ids ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"abc\r\nX-Injected: yes",  # ends the header: a second header, and a sane id
        b"abc\nX-Injected: yes",
        b"abc\rX-Injected: yes",
        b"abc%0d%0aX-Injected:%20yes",
        b"a" * 10_000,
        b"a" * 129,
        b"caf\xc3\xa9",
        b"\xff\xfe\xfd",
        b"abc def",
        b"abc\tdef",
        b"<script>alert(1)</script>",
        b"../../etc/passwd",
        b"",
    ],
    ids=[
        "crlf",
        "lf",
        "cr",
        "encoded-crlf",
        "10k",
        "129",
        "utf8",
        "latin1",
        "space",
        "tab",
        "html",
        "path",
        "empty",
    ],
)
async def test_a_hostile_request_id_is_never_echoed(served: Served, value: bytes):
    data = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: "
        + value
        + b"\r\nConnection: close\r\n\r\n"
    )
    response = await exchange(served.port, data)
    assert response.status < 500
    assert "X-Injected" not in response.headers
    assert b"X-Injected" not in response.raw_head
    echoed = response.headers.getall("X-Request-ID", [])
    assert len(echoed) <= 1
    if echoed:
        assert SANE_REQUEST_ID.fullmatch(echoed[0]), echoed[0]
        assert echoed[0].encode("latin-1") != value or SANE_REQUEST_ID.fullmatch(value.decode())


async def test_a_sane_request_id_is_echoed(served: Served):
    value = "req-" + "7" * 124  # 128 characters, the longest kept
    response = await exchange(
        served.port, http_request("GET", "/healthz", headers=[("X-Request-ID", value)])
    )
    assert response.headers["X-Request-ID"] == value


# -- slow and idle clients -------------------------------------------------------------


async def drip(
    port: int,
    prefix: bytes,
    data: bytes,
    interval: float,
    seconds: float,
    *,
    kept_alive: bool = False,
    dripping: asyncio.Event | None = None,
) -> tuple[bool, float]:
    """Send ``prefix``, then ``data`` one byte per ``interval`` for at most ``seconds``.

    With ``kept_alive``, first send a whole request on the connection and read its 200.
    ``dripping`` is set once the first byte of ``data`` is sent. Returns ``(closed by the
    server, seconds until then)``, counted from the start of ``prefix``.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kept_alive:
            writer.write(http_request("GET", "/healthz", close=False))
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
            assert response.status == 200
        started = time.monotonic()
        writer.write(prefix)
        await writer.drain()
        for index in range(len(data)):
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                return False, elapsed
            try:
                writer.write(data[index : index + 1])
                await writer.drain()
                if dripping is not None:
                    dripping.set()
                # Wait one interval for the server to answer or hang up: either ends it.
                got = await asyncio.wait_for(reader.read(65536), interval)
            except TimeoutError:
                continue
            except ConnectionError:
                return True, time.monotonic() - started
            if got == b"" or got.startswith(b"HTTP/1."):  # hung up, or answered (408)
                return True, time.monotonic() - started
            raise AssertionError(f"unexpected bytes to a slow client: {got[:200]!r}")
        return False, time.monotonic() - started
    finally:
        writer.close()


SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


async def test_slow_clients_do_not_delay_other_clients(served: Served, make_key: MakeKey):
    """Twenty slowloris connections drip headers; another client is served at full speed."""
    key = await make_key("pro")
    drips = [
        asyncio.ensure_future(drip(served.port, SLOW_HEADERS, b"a" * 1000, 0.1, seconds=3.0))
        for _ in range(20)
    ]
    latencies = []
    try:
        async with aiohttp.ClientSession() as session:
            while not all(d.done() for d in drips) and len(latencies) < 200:
                started = time.monotonic()
                async with session.post(
                    f"{served.url}/v1/images/generations",
                    json={"prompt": "meanwhile", "size": "256x256"},
                    headers={"Authorization": f"Bearer {key.key}"},
                ) as response:
                    await response.read()
                    assert response.status in (200, 429)
                latencies.append(time.monotonic() - started)
    finally:
        results = await asyncio.gather(*drips, return_exceptions=True)
    assert len(latencies) >= 10
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    assert all(not isinstance(r, BaseException) for r in results), results


@pytest.mark.parametrize("kept_alive", [False, True], ids=["first-request", "kept-alive"])
async def test_slow_headers_are_cut_off(served: Served, kept_alive: bool):
    closed, after = await drip(
        served.port,
        SLOW_HEADERS,
        b"a" * 1000,
        0.1,
        REQUEST_READ_DEADLINE,
        kept_alive=kept_alive,
    )
    assert closed, f"still open after {after:.1f}s of one header byte per 100 ms"


async def test_cutting_off_slow_headers_stalls_no_one(served: Served, make_key: MakeKey):
    """While one connection drips its headers until it is cut off, other clients are
    served at once; a kept-alive connection idle for longer than the header deadline
    between its requests is not cut off (only the keep-alive timer governs it)."""
    key = await make_key("pro")
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(http_request("GET", "/healthz", close=False))
        await writer.drain()
        first = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
        assert first.status == 200
        idle_since = time.monotonic()

        dripping = asyncio.Event()
        slow = asyncio.ensure_future(
            drip(
                served.port,
                SLOW_HEADERS,
                b"a" * 1000,
                0.1,
                REQUEST_READ_DEADLINE,
                dripping=dripping,
            )
        )
        try:
            await asyncio.wait_for(dripping.wait(), PROMPT_ANSWER_SECONDS)
            async with asyncio.timeout(PROMPT_ANSWER_SECONDS):
                await assert_healthy(served, key.key)
            assert not slow.done(), "the slow client was cut off before the others were served"
        finally:
            closed, after = await slow
        assert closed, f"still open after {after:.1f}s of one header byte per 100 ms"

        assert time.monotonic() - idle_since > HEADER_READ_TIMEOUT
        writer.write(http_request("GET", "/healthz"))
        await writer.drain()
        second = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
        assert second.status == 200
    finally:
        writer.close()
    log = served.log_text()
    assert "request headers not complete" in log
    assert "X-Slow" not in log


async def test_a_slow_body_is_cut_off(served: Served):
    head = http_request(
        "POST",
        "/v1/auth/login",
        headers=[("Content-Type", "application/json")],
        content_length=10_000,
        close=False,
    )
    closed, after = await drip(
        served.port, head + b'{"email": ', b" " * 10_000, 0.1, REQUEST_READ_DEADLINE
    )
    assert closed, f"still open after {after:.1f}s"


async def test_thousands_of_idle_connections_do_not_block_a_request(
    served: Served, make_key: MakeKey
):
    soft = raise_open_file_limit(2 * IDLE_CONNECTIONS + 1024)
    count = min(IDLE_CONNECTIONS, soft - 512)
    if count < 500:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low for this test")
    key = await make_key("pro")
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for start in range(0, count, 100):  # in batches, within the listen backlog
            pairs = await asyncio.gather(
                *(
                    asyncio.open_connection("127.0.0.1", served.port)
                    for _ in range(min(100, count - start))
                )
            )
            readers += [reader for reader, _ in pairs]
            writers += [writer for _, writer in pairs]
        # One idle connection sends a byte, so the server holds a half-read request too.
        writers[0].write(b"G")
        await writers[0].drain()
        started = time.monotonic()
        await assert_healthy(served, key.key)
        assert time.monotonic() - started < 2.0
        # The idle connections were accepted and are still served.
        for writer, reader in ((writers[-1], readers[-1]), (writers[1], readers[1])):
            writer.write(http_request("GET", "/healthz"))
            response = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
            assert response.status == 200
    finally:
        for writer in writers:
            writer.close()
    await assert_healthy(served, key.key)


async def test_a_connection_busy_past_the_header_deadline_is_not_cut_off(served: Served):
    """Requests back to back on one connection, for twice the header deadline: each
    head gets its own time, so none is cut off and the connection stays open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + 2 * HEADER_READ_TIMEOUT
        answered = 0
        while loop.time() < until:
            writer.write(http_request("GET", "/healthz", close=False))
            await writer.drain()
            answer = await asyncio.wait_for(read_response(reader), PROMPT_ANSWER_SECONDS)
            assert answer.status == 200
            answered += 1
        assert answered > 1
    finally:
        writer.close()


@pytest.mark.parametrize(
    "key",
    [b"nb_live_\xff\xfe\xfd", b"\xed\xa0\x80" * 14, b"nb_live_" + "é".encode() * 19],
    ids=["not-utf8", "utf8-surrogate", "non-ascii"],
)
async def test_a_key_that_is_not_text_is_refused_as_invalid(served: Served, key: bytes):
    """Bytes no key can hold reach the key cache's first look as text it must not choke
    on: the answer is the 401 for a bad key, never a 500."""
    data = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + key + b"\r\nContent-Type: application/json\r\n"
        b'Content-Length: 18\r\nConnection: close\r\n\r\n{"prompt": "fox"}\n'
    )
    response = await exchange(served.port, data)
    assert response.status == 401, response.body
    assert response.json()["error"]["code"] == "invalid_api_key"
