"""Response headers: every answer, protocol errors included, says ``nosniff``, names no
server version and has no CORS headers; a client's ``X-Request-ID`` is echoed only when
it is sane (up to 128 of ``A-Za-z0-9._:-``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.accounts.tokens import TokenIssuer
from tests.support.config import JWT_SECRET
from tests.support.gateway import Gateway, MakeKey
from tests.support.http import bearer
from tests.support.processes import Served
from tests.support.raw_http import exchange, http_request, raw_request

SANE_SERVER = re.compile(r"(?i)aiohttp|python|uvloop|\d+\.\d+")
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_headers(what: str, headers: Any) -> None:
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    server = headers.get("Server")
    assert server is None or not SANE_SERVER.search(server), f"{what}: Server: {server}"
    cors = [name for name in headers if name.lower().startswith("access-control-")]
    assert not cors, f"{what}: {cors}"


async def test_every_response_says_nosniff_hides_versions_and_has_no_cors(
    app: Gateway, make_key: MakeKey
):
    key = await make_key()
    limited = await make_key(requests_per_minute=1)
    token = TokenIssuer([JWT_SECRET], 3600).issue(str(key.user_id))
    origin = {"Origin": "https://evil.example"}
    client = app.client
    gen = {"prompt": "p", "size": "256x256"}
    calls: list[tuple[str, str, dict[str, Any], int | None]] = [  # None: any status
        ("GET", "/healthz", {}, 200),
        ("HEAD", "/healthz", {}, 200),
        ("GET", "/readyz", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/v1/models", {"headers": bearer(key.key)}, 200),
        ("POST", "/v1/images/generations", {"json": gen, "headers": bearer(key.key)}, 200),
        ("POST", "/v1/images/generations", {"json": gen, "headers": bearer(limited.key)}, 200),
        ("POST", "/v1/images/generations", {"json": gen, "headers": bearer(limited.key)}, 429),
        ("GET", "/v1/me", {"headers": bearer(token)}, 200),
        ("POST", "/v1/images/generations", {"json": gen}, 401),
        ("GET", "/v1/me", {}, 401),
        ("GET", "/admin/users", {"headers": bearer("x" * 20)}, 401),
        (
            "POST",
            "/v1/images/generations",
            {"data": b"{nope", "headers": bearer(key.key)},
            400,
        ),
        ("POST", "/v1/images/generations?api_key=x", {"json": gen}, 400),
        ("GET", "/nothing/here", {}, 404),
        ("DELETE", f"/v1/keys/{uuid.uuid4()}", {"headers": bearer(token)}, 404),
        ("GET", "/v1/images/generations", {}, 405),
        ("PUT", "/healthz", {}, 405),
        (
            "POST",
            "/v1/images/generations",
            {"data": b"{" + b" " * 70_000 + b"}", "headers": bearer(key.key)},
            413,
        ),
        ("POST", "/v1/auth/login", {"json": {"email": "a@b.cd", "password": "x"}}, 401),
        ("GET", "/openapi.json", {}, None),
        ("GET", "/docs", {}, None),
        ("GET", "/docs/static/../../config.py", {}, None),
    ]
    for method, path, kwargs, status in calls:
        headers = {**origin, **kwargs.pop("headers", {})}
        response = await client.request(method, path, headers=headers, **kwargs)
        await response.read()
        assert status is None or response.status == status, (method, path, await response.text())
        assert response.status < 500, (method, path)
        check_headers(f"{method} {path} -> {status}", response.headers)


@pytest.mark.parametrize(
    "path", ["/v1/images/generations", "/v1/models", "/v1/auth/login", "/v1/keys", "/healthz"]
)
async def test_a_cors_preflight_gets_no_cors_headers(gateway: Gateway, path: str):
    response = await gateway.client.options(
        path,
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    await response.read()
    assert response.status in (404, 405)
    check_headers(f"OPTIONS {path}", response.headers)


@pytest.mark.slow
@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["bad-request-line", "100kb-header", "control-char", "content-length-and-chunked"],
)
async def test_protocol_errors_get_the_same_headers(served: Served, raw: bytes):
    answer = await raw_request(served.port, raw)
    head, _, _ = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split(" ")[1].startswith("4")
    headers = CIMultiDict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:])
    )
    check_headers(lines[0], headers)
    assert headers.get("Content-Type", "").startswith("application/json")


# -- request ids ---------------------------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
async def test_a_sane_request_id_is_echoed(served: Served):
    value = "req-" + "7" * 124  # 128 characters, the longest kept
    response = await exchange(
        served.port, http_request("GET", "/healthz", headers=[("X-Request-ID", value)])
    )
    assert response.headers["X-Request-ID"] == value
