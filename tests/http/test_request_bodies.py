"""Hostile request bodies: not UTF-8, nested 100,000 deep, numbers beyond any range, text
Postgres cannot store, and bodies over the limit (refused before they are read).

Every test talks to a real ``gateway serve`` process (the module's ``served``), over raw
sockets, because a client library refuses to send most of this. A bad request is a 4xx
(an OpenAI-shaped JSON error where the gateway's own code answers), never a 5xx, and the
server stays healthy for the next client on a fresh connection.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from gateway.accounts.tokens import TokenIssuer
from tests.support.config import ADMIN_TOKEN, JWT_SECRET
from tests.support.gateway import MakeKey
from tests.support.processes import MAX_BODY, Served
from tests.support.raw_http import (
    PROMPT_ANSWER_SECONDS,
    RawResponse,
    assert_healthy,
    check_error,
    exchange,
    http_request,
    json_auth,
    read_response,
)

pytestmark = pytest.mark.slow


async def post_body(served: Served, key: str, body: bytes) -> RawResponse:
    return await exchange(
        served.port,
        http_request("POST", "/v1/images/generations", headers=json_auth(key), body=body),
    )


# -- bodies --------------------------------------------------------------------------------


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
        served.port, http_request(method, path, headers=json_auth(credential), body=raw)
    )
    assert response.status < 500, response.body[:300]
    code = response.json()["error"]["code"] if response.status >= 400 else ""
    if code:
        check_error(response, response.status, code)
    assert (response.status, code) in answers, (response.status, response.body[:300])


# -- too large -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/auth/register"])
@pytest.mark.parametrize("expect_continue", [False, True])
async def test_a_10mb_body_is_refused_before_it_is_read(
    served: Served, make_key: MakeKey, path: str, expect_continue: bool
):
    """Content-Length says 10 MB; only the first 64 KB is sent, and the 413 still comes."""
    key = await make_key("pro")
    headers = json_auth(key.key)
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
        headers=[*json_auth(key.key), ("Transfer-Encoding", "chunked")],
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
