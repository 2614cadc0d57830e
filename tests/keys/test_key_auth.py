"""How a request presents its key, the hostile cases: two keys in one request, a key in
the URL, a key that is not text.

Every test talks to a real ``gateway serve`` process (the module's ``served``), over raw
sockets, because a client library refuses to send most of this. A bad request is a 4xx
(an OpenAI-shaped JSON error where the gateway's own code answers), never a 5xx, and the
server stays healthy for the next client on a fresh connection.
"""

from __future__ import annotations

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.support.gateway import MakeKey
from tests.support.processes import Served
from tests.support.raw_http import (
    GENERATION_BODY,
    assert_healthy,
    check_error,
    exchange,
    http_request,
    json_auth,
)

pytestmark = pytest.mark.slow


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


# -- credentials in the URL ----------------------------------------------------------------


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
        body=GENERATION_BODY if method == "POST" else None,
    )
    error = check_error(await exchange(served.port, data), 400, "invalid_request")
    assert key.key not in error["message"]
    # The same key in the URL of a request that also carries it properly.
    data = http_request(
        method, f"{path}?{name}={key.key}", headers=json_auth(key.key), body=GENERATION_BODY
    )
    check_error(await exchange(served.port, data), 400, "invalid_request")
    await assert_healthy(served)
    assert key.key not in served.log_text()


# -- bytes no key can hold -----------------------------------------------------------------


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
