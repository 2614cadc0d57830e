"""The egress client: the policy holds at connect time, whatever DNS says and however
the URL is written; redirects are followed by hand and re-checked.

Targets are real listeners that count the TCP connections they accept; names resolve
through an injected resolver, so "a public name that resolves to 127.0.0.1" (DNS
rebinding) needs no DNS server.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.egress.client import EgressClient, EgressError, redact_url
from gateway.egress.policy import EgressPolicy
from tests.support.listeners import Answer, Listener


class StaticResolver(AbstractResolver):
    """Answers from a table; counts the lookups."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass


MakeClient = Callable[..., EgressClient]


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    target = await Listener("127.0.0.1").start()
    target.routes["/x"] = Answer(200, b"inside")
    yield target
    await target.close()


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[EgressClient] = []

    def make(allow: Sequence[str] = (), **kwargs: Any) -> EgressClient:
        client = EgressClient(EgressPolicy.from_allow_list(allow), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def refused(client: EgressClient, url: str) -> EgressError:
    with pytest.raises(EgressError) as caught:
        await client.get(url, max_bytes=1024, max_seconds=5)
    assert caught.value.refused, caught.value.reason
    return caught.value


async def test_a_public_name_resolving_to_loopback_is_refused_at_connect(
    listener: Listener, make_client: MakeClient
) -> None:
    resolver = StaticResolver({"images.example": ["127.0.0.1"]})
    client = make_client(resolver=resolver)

    error = await refused(client, listener.url("/x", "images.example"))

    assert resolver.lookups == ["images.example"]
    assert "127.0.0.1 (loopback)" in error.reason
    assert listener.accepts == 0


async def test_every_address_of_a_name_is_checked(
    listener: Listener, make_client: MakeClient
) -> None:
    resolver = StaticResolver({"images.example": ["192.0.2.10", "10.0.0.7", "127.0.0.1"]})
    client = make_client(resolver=resolver)

    await refused(client, listener.url("/x", "images.example"))

    assert listener.accepts == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::ffff:127.0.0.1"])
async def test_the_raw_session_checks_ip_literals_too(
    listener: Listener, make_client: MakeClient, host: str
) -> None:
    """aiohttp does not ask its resolver about an IP literal: the socket factory,
    which sees every address, is what refuses it."""
    client = make_client()

    with pytest.raises(aiohttp.ClientConnectorError, match="egress policy refuses"):
        await client.session.get(listener.url("/x", host))

    assert listener.accepts == 0


async def test_an_allowed_name_connects_and_other_names_for_the_same_address_do_not(
    listener: Listener, make_client: MakeClient
) -> None:
    resolver = StaticResolver({"images.internal": ["127.0.0.1"], "evil.example": ["127.0.0.1"]})
    client = make_client(["images.internal"], resolver=resolver)

    response = await client.get(listener.url("/x", "images.internal"), max_bytes=64, max_seconds=5)
    await refused(client, listener.url("/x", "evil.example"))

    assert (response.status, response.body) == (200, b"inside")
    assert listener.accepts == 1


async def test_an_allowed_network_connects(listener: Listener, make_client: MakeClient) -> None:
    client = make_client(["127.0.0.0/30"])

    response = await client.get(listener.url("/x"), max_bytes=64, max_seconds=5)

    assert (response.status, response.body) == (200, b"inside")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://images.example/a.png",
        "gopher://127.0.0.1:6379/_INFO",
        "http:///no-host",
        "http://user:secret@images.example/a.png",
        "not a url at all",
    ],
)
async def test_urls_that_are_not_plain_http_are_refused_before_any_lookup(
    make_client: MakeClient, url: str
) -> None:
    resolver = StaticResolver({})
    client = make_client(resolver=resolver)

    error = await refused(client, url)

    assert resolver.lookups == []
    assert "secret" not in error.reason


async def test_redirects_are_followed_up_to_three_and_each_is_checked(
    make_client: MakeClient,
) -> None:
    allowed = await Listener("127.0.0.2").start()
    inside = await Listener("127.0.0.1").start()
    try:
        for hop in range(3):
            allowed.routes[f"/{hop}"] = Answer(302, headers={"Location": f"/{hop + 1}"})
        allowed.routes["/3"] = Answer(200, b"after three")
        allowed.routes["/escape"] = Answer(
            301, headers={"Location": inside.url("/x").replace("127.0.0.1", "[::ffff:7f00:1]")}
        )
        client = make_client(["127.0.0.2"])

        three = await client.get(allowed.url("/0"), max_bytes=64, max_seconds=5)
        allowed.routes["/3"] = Answer(302, headers={"Location": "/4"})
        with pytest.raises(EgressError, match="more than 3 redirects"):
            await client.get(allowed.url("/0"), max_bytes=64, max_seconds=5)
        await refused(client, allowed.url("/escape"))
    finally:
        await allowed.close()
        await inside.close()

    assert (three.status, three.body) == (200, b"after three")
    assert inside.accepts == 0


async def test_credentials_stay_with_their_origin_and_303_turns_a_post_into_a_get(
    make_client: MakeClient,
) -> None:
    first = await Listener("127.0.0.2").start()
    second = await Listener("127.0.0.3").start()
    try:
        first.routes["/hook"] = Answer(303, headers={"Location": second.url("/done")})
        second.routes["/done"] = Answer(200, b"ok")
        client = make_client(["127.0.0.2", "127.0.0.3"])

        response = await client.request(
            "POST",
            first.url("/hook"),
            headers={"Authorization": "Bearer s3cr3t", "Content-Type": "application/json"},
            body=b"{}",
            max_bytes=64,
            max_seconds=5,
        )
    finally:
        await first.close()
        await second.close()

    assert response.status == 200
    [posted] = first.requests
    [followed] = second.requests
    assert posted.startswith(b"POST /hook ")
    assert b"Bearer s3cr3t" in posted
    assert followed.startswith(b"GET /done ")
    assert b"s3cr3t" not in followed
    assert b"application/json" not in followed


async def test_a_body_over_the_limit_is_an_error(
    listener: Listener, make_client: MakeClient
) -> None:
    listener.routes["/big"] = Answer(200, b"x" * 2048)
    client = make_client(["127.0.0.1"])

    with pytest.raises(EgressError, match="over 1024"):
        await client.get(listener.url("/big"), max_bytes=1024, max_seconds=5)


async def test_no_answer_in_time_is_an_error(make_client: MakeClient) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        client = make_client(["127.0.0.1"])

        with pytest.raises(EgressError, match=r"no full answer within 0\.2 s"):
            await client.get(f"http://127.0.0.1:{port}/", max_bytes=64, max_seconds=0.2)


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://cdn.example/a/b.png?X-Amz-Signature=abc#frag", "https://cdn.example/a/b.png"),
        ("http://user:pw@10.0.0.7:8080/x?token=t", "http://10.0.0.7:8080/x"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("https://cdn.example/" + "a" * 300, "https://cdn.example/" + "a" * 179 + "…"),
    ],
)
def test_urls_are_logged_without_credentials_or_queries(url: str, logged: str) -> None:
    assert redact_url(url) == logged


async def test_a_url_can_be_checked_before_it_is_used(make_client: MakeClient) -> None:
    client = make_client()

    assert str(client.check_url("https://cdn.example/a.png?x=1")) == "https://cdn.example/a.png?x=1"
    for url in ("http://10.0.0.7/hook", "http://[::1]/hook", "ftp://cdn.example/a"):
        with pytest.raises(EgressError):
            client.check_url(url)


async def _raw_server(answer: bytes) -> tuple[asyncio.Server, str]:
    """A server that writes ``answer`` to each connection once its request head is in,
    then closes it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/image.png"


async def test_a_body_cut_short_of_its_content_length_is_an_error(
    make_client: MakeClient,
) -> None:
    server, url = await _raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 1000
    )
    client = make_client(["127.0.0.1"])
    try:
        with pytest.raises(EgressError):
            await client.get(url, max_bytes=10_000, max_seconds=5)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_sized_body_is_the_servers_bytes_where_its_buffer_held_other_data(
    make_client: MakeClient,
) -> None:
    # The buffer is not zeroed first (gateway/backends/buffers.py): memory freed just
    # before, at the same size, is what the heap hands out next.
    data = os.urandom(100_000)  # neither the stale bytes nor the zeros of fresh memory
    server, url = await _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + data)
    client = make_client(["127.0.0.1"])
    stale = bytearray(b"\xaa") * len(data)
    del stale
    try:
        answer = await client.get(url, max_bytes=200_000, max_seconds=5)
    finally:
        server.close()
        await server.wait_closed()

    assert answer.status == 200
    assert bytes(answer.body) == data
