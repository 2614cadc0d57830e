"""The lean HTTP/1.1 client (:mod:`gateway.backends.h1`) against real local servers.

aiohttp servers where the real wire format is enough; raw ``asyncio`` servers where a
test needs exact bytes: framing, content codings, malformed or cut-off responses,
connections the server closes or talks on when nobody asked.

Nothing here waits on time for correctness: tests wait on events, and ``WAIT`` only
bounds how long a test waits for something that should happen at once.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import __version__
from gateway.backends import h1

#: Seconds: the most a test waits for something that should happen at once.
WAIT = 5.0
#: Seconds: the deadline of calls that a correct client finishes long before it.
SHORT = 2.0
LIMIT = 1024 * 1024


async def call(
    client: h1.Client,
    url: str,
    method: str = "GET",
    *,
    max_bytes: int = LIMIT,
    max_seconds: float = WAIT,
    **kwargs: Any,
) -> h1.Response:
    return await client.request(method, url, max_bytes=max_bytes, max_seconds=max_seconds, **kwargs)


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT)


def response(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    """An HTTP/1.1 response with a Content-Length."""
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{h}\r\n" for h in headers)
    return head.encode("latin-1") + b"\r\n" + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


# -- raw servers: exact bytes ---------------------------------------------------------


@dataclass
class Request:
    """A request as a raw server read it (header names in lower case)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Conn:
    """One connection a raw server accepted."""

    def __init__(
        self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        #: Set when the client has closed the connection (EOF or reset seen).
        self.gone = asyncio.Event()

    async def request(self) -> Request | None:
        """The next request on the connection; ``None`` once the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.gone.set()
            return None
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ")
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(method, target, headers, body)
        self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def until_gone(self) -> None:
        """Read (and drop) whatever comes until the client closes the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.gone.set()

    def close(self) -> None:
        """Close the connection from the server's side (what was sent is flushed)."""
        self.writer.close()


Handler = Callable[[Conn], Awaitable[None]]


class RawServer:
    """An ``asyncio.start_server`` on 127.0.0.1 that runs ``handler`` per connection.

    Counts the connections it accepted and how many were open at once. After the
    handler returns, the connection stays open until the client closes it (unless the
    handler closed it).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.conns: list[Conn] = []
        self.requests: list[Request] = []
        self.open = 0
        self.max_open = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def accepted(self) -> int:
        return len(self.conns)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(self, reader, writer)
        self.conns.append(conn)
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(conn)
            if not writer.is_closing():
                await conn.until_gone()
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.gone.set()
        except asyncio.CancelledError:
            pass  # closed at teardown: end like any handler (asyncio logs a cancelled one)
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


def answer_each(make: Callable[[Request], bytes]) -> Handler:
    """A handler that answers every request on a connection with ``make(request)``."""

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            conn.send(make(request))

    return handler


def answer_once(data: bytes, *, then_close: bool = False) -> Handler:
    """A handler that reads one request, sends ``data``, and keeps (or closes) the line."""

    async def handler(conn: Conn) -> None:
        if await conn.request() is None:
            return
        conn.send(data)
        if then_close:
            conn.close()

    return handler


def hold_until(
    release: asyncio.Event, arrived: asyncio.Event | None = None, *, count: int = 1
) -> Handler:
    """A handler that answers each request (with its target) only once ``release`` is set.

    ``arrived`` is set once ``count`` requests are held.
    """
    held = 0

    async def handler(conn: Conn) -> None:
        nonlocal held
        while (request := await conn.request()) is not None:
            held += 1
            if arrived is not None and held >= count:
                arrived.set()
            await release.wait()
            conn.send(response(request.target.encode()))

    return handler


RawStart = Callable[[Handler], Awaitable[RawServer]]
WebStart = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]
ClientMaker = Callable[..., h1.Client]


@pytest.fixture
async def raw() -> AsyncIterator[RawStart]:
    """``await raw(handler)``: a raw server until the test ends."""
    servers: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def web_server() -> AsyncIterator[WebStart]:
    """``await web_server(handler)``: an aiohttp server answering every path; its URL."""
    servers: list[TestServer] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientMaker]:
    """``make_client(**options)``: a client closed when the test ends."""
    clients: list[h1.Client] = []

    def make(**options: Any) -> h1.Client:
        client = h1.Client(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def client(make_client: ClientMaker) -> h1.Client:
    return make_client()


@pytest.fixture
def lost_connections(monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[None]:
    """Gets an item each time a client connection learns that it is closed.

    The client notices a close by the server (or closes a connection itself) in an
    event-loop callback; tests that need it to have noticed wait on this queue.
    """
    lost: asyncio.Queue[None] = asyncio.Queue()
    original = h1._Connection.connection_lost

    def connection_lost(self: h1._Connection, exc: Exception | None) -> None:
        original(self, exc)
        lost.put_nowait(None)

    monkeypatch.setattr(h1._Connection, "connection_lost", connection_lost)
    return lost


class FakeClock:
    """Stands in for the ``time`` module inside h1: its monotonic clock moves on demand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def peer(request: web.Request) -> object:
    """The client's end of the TCP connection a request came on."""
    assert request.transport is not None
    return request.transport.get_extra_info("peername")


# -- requests and responses -----------------------------------------------------------


async def test_a_post_sends_its_body_and_headers_and_gets_the_whole_response(
    client: h1.Client, web_server: WebStart
) -> None:
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, dict(request.headers), await request.read()))
        return web.Response(status=201, body=b"created", headers={"X-Thing": "yes"})

    url = await web_server(handler)
    body = b'{"prompt": "a lighthouse"}\r\n\x00\xff'

    answer = await call(
        client,
        url + "/v1/images",
        "POST",
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
        body=body,
    )

    [(method, path, headers, received)] = seen
    assert (method, path, received) == ("POST", "/v1/images", body)
    assert headers["Host"] == url.removeprefix("http://")
    assert headers["Content-Length"] == str(len(body))
    assert headers["User-Agent"] == f"image-gateway/{__version__}"
    assert headers["Authorization"] == "Bearer sk-test"
    assert headers["Content-Type"] == "application/json"
    assert answer.status == 201
    assert answer.body == b"created"
    assert answer.headers["x-thing"] == "yes"
    assert answer.headers["content-length"] == "7"
    assert all(name == name.lower() for name in answer.headers)


@pytest.mark.parametrize(
    ("method", "body", "content_length"),
    [("GET", None, None), ("POST", None, "0"), ("PUT", b"", "0"), ("DELETE", b"xy", "2")],
)
async def test_content_length_is_sent_with_a_body_or_a_method_that_takes_one(
    client: h1.Client, raw: RawStart, method: str, body: bytes | None, content_length: str | None
) -> None:
    server = await raw(answer_each(lambda request: response()))

    await call(client, server.url + "/x", method, body=body)

    [request] = server.requests
    assert (request.method, request.target) == (method, "/x")
    assert request.headers.get("content-length") == content_length
    assert request.body == (body or b"")


async def test_the_request_head_is_exactly_as_documented(client: h1.Client, raw: RawStart) -> None:
    heads: list[bytes] = []

    async def capture(conn: Conn) -> None:
        heads.append(await conn.reader.readuntil(b"\r\n\r\n"))
        conn.send(response())

    server = await raw(capture)
    host = server.url.removeprefix("http://")

    await call(client, server.url + "/a/b", headers={"X-Request-ID": "r-1"})

    assert heads == [
        (
            f"GET /a/b HTTP/1.1\r\nHost: {host}\r\n"
            f"User-Agent: image-gateway/{__version__}\r\n"
            "Accept-Encoding: gzip, deflate\r\nX-Request-ID: r-1\r\n\r\n"
        ).encode()
    ]


@pytest.mark.parametrize("status", [301, 400, 404, 429, 500, 503])
async def test_statuses_other_than_2xx_are_returned_not_raised(
    client: h1.Client, web_server: WebStart, status: int
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text="nope", headers={"Location": "/elsewhere"})

    url = await web_server(handler)

    answer = await call(client, url + "/x")

    assert answer.status == status
    assert answer.body == b"nope"


async def test_redirects_are_not_followed(client: h1.Client, web_server: WebStart) -> None:
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.Response(status=302, headers={"Location": "/target"})

    url = await web_server(handler)

    answer = await call(client, url + "/start")

    assert (answer.status, answer.headers["location"]) == (302, "/target")
    assert paths == ["/start"]


async def test_a_query_string_is_sent_with_the_path(
    client: h1.Client, web_server: WebStart
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok")

    url = await web_server(handler)

    await call(client, url + "/v1/predictions/abc?wait=5&fields=a%20b")
    await call(client, url + "?q=1")

    assert seen == ["/v1/predictions/abc?wait=5&fields=a%20b", "/?q=1"]


async def test_repeated_response_headers_are_joined(client: h1.Client, raw: RawStart) -> None:
    server = await raw(answer_each(lambda request: response(b"", "Via: a", "VIA: b")))

    answer = await call(client, server.url)

    assert answer.headers["via"] == "a, b"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "/relative", "http:///no-host"])
async def test_a_url_that_is_not_absolute_http_raises_value_error(
    client: h1.Client, url: str
) -> None:
    with pytest.raises(ValueError, match="absolute"):
        await call(client, url)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Id": "a\r\nX-Injected: 1"},
        {"X-Id": "a\nb"},
        {"X-Id": "a\rb"},
        {"X-Id\r\nX-Injected": "1"},
    ],
)
async def test_a_header_holding_cr_or_lf_raises_value_error_and_sends_nothing(
    client: h1.Client, raw: RawStart, headers: dict[str, str]
) -> None:
    server = await raw(answer_each(lambda request: response()))

    with pytest.raises(ValueError, match="CR or LF"):
        await call(client, server.url + "/bad", "POST", headers=headers, body=b"x")
    await call(client, server.url + "/good")  # had the bad call sent anything, it'd be first

    assert [r.target for r in server.requests] == ["/good"]
    assert server.accepted == 1


# -- keep-alive -------------------------------------------------------------------------


async def test_sequential_calls_reuse_one_connection(
    client: h1.Client, web_server: WebStart
) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(peer(request))
        return web.Response(text="ok")

    url = await web_server(handler)

    for _ in range(3):
        assert (await call(client, url + "/x", "POST", body=b"{}")).status == 200

    assert len(peers) == 3
    assert len(set(peers)) == 1


async def test_a_response_with_connection_close_is_not_reused(
    client: h1.Client, web_server: WebStart
) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(peer(request))
        answer = web.Response(text="bye")
        answer.force_close()  # "Connection: close"
        return answer

    url = await web_server(handler)

    for _ in range(2):
        assert (await call(client, url)).body == b"bye"

    assert len(set(peers)) == 2


async def test_an_http_1_0_response_without_keep_alive_is_not_reused(
    client: h1.Client, raw: RawStart
) -> None:
    server = await raw(answer_once(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))

    assert (await call(client, server.url)).body == b"ok"
    assert (await call(client, server.url)).body == b"ok"

    assert server.accepted == 2
    await wait(server.conns[0].gone)


async def test_an_idle_connection_the_server_closed_is_not_reused(
    client: h1.Client, raw: RawStart, lost_connections: asyncio.Queue[None]
) -> None:
    close_it = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            conn.send(response(request.target.encode(), "Connection: keep-alive"))
            if request.target == "/first":
                await close_it.wait()
                conn.close()
                return

    server = await raw(handler)
    assert (await call(client, server.url + "/first")).body == b"/first"

    close_it.set()
    await asyncio.wait_for(lost_connections.get(), WAIT)  # the client noticed the close

    assert (await call(client, server.url + "/second")).body == b"/second"
    assert server.accepted == 2


async def test_an_idle_connection_older_than_idle_seconds_is_closed_not_reused(
    make_client: ClientMaker, raw: RawStart, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(h1, "time", clock)
    client = make_client(idle_seconds=10)
    server = await raw(answer_each(lambda request: response()))

    await call(client, server.url)
    clock.now += 9
    await call(client, server.url)
    assert server.accepted == 1  # younger than idle_seconds: reused

    clock.now += 11
    await call(client, server.url)

    assert server.accepted == 2
    await wait(server.conns[0].gone)


async def test_a_second_response_nobody_asked_for_is_not_taken_for_the_next_one(
    client: h1.Client, raw: RawStart
) -> None:
    def two_answers(request: Request) -> bytes:
        return response(request.target.encode()) + response(b"nobody asked")

    server = await raw(answer_each(two_answers))

    assert (await call(client, server.url + "/one")).body == b"/one"
    assert (await call(client, server.url + "/two")).body == b"/two"

    assert server.accepted == 2
    await wait(server.conns[0].gone)


async def test_bytes_arriving_on_an_idle_connection_make_it_unusable(
    client: h1.Client, raw: RawStart, lost_connections: asyncio.Queue[None]
) -> None:
    talk = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            conn.send(response(request.target.encode()))
            if request.target == "/one":
                await talk.wait()
                conn.send(response(b"nobody asked"))

    server = await raw(handler)
    assert (await call(client, server.url + "/one")).body == b"/one"

    talk.set()
    await asyncio.wait_for(lost_connections.get(), WAIT)

    assert (await call(client, server.url + "/two")).body == b"/two"
    assert server.accepted == 2


# -- framing ------------------------------------------------------------------------------


async def test_a_chunked_response_is_read_whole_and_the_connection_reused(
    client: h1.Client, raw: RawStart
) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.send(CHUNKED_HEAD + chunk(b"hello, "))
            await conn.writer.drain()
            conn.send(chunk(b"chunked ") + chunk(b"world"))
            await conn.writer.drain()
            conn.send(b"0\r\nX-Trailer: t\r\n\r\n")

    server = await raw(handler)

    for _ in range(2):
        answer = await call(client, server.url)
        assert answer.body == b"hello, chunked world"
        assert answer.headers["transfer-encoding"] == "chunked"

    assert server.accepted == 1


async def test_a_close_delimited_response_is_read_to_the_close(
    client: h1.Client, raw: RawStart
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await conn.writer.drain()
        conn.send(b"second part")
        conn.close()

    server = await raw(handler)

    answer = await call(client, server.url)
    assert (answer.status, answer.body) == (200, b"first part, second part")
    assert (await call(client, server.url)).body == b"first part, second part"

    assert server.accepted == 2


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
async def test_a_status_without_a_body_completes_at_its_headers(
    client: h1.Client, raw: RawStart, status: str
) -> None:
    server = await raw(answer_each(lambda request: f"HTTP/1.1 {status}\r\n\r\n".encode()))

    for _ in range(2):
        answer = await call(client, server.url)
        assert (answer.status, answer.body) == (int(status[:3]), b"")

    assert server.accepted == 1


async def test_a_head_response_has_no_body_even_with_a_content_length(
    client: h1.Client, web_server: WebStart
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"twelve bytes")

    url = await web_server(handler)

    answer = await call(client, url, "HEAD", max_seconds=SHORT)

    assert (answer.status, answer.headers["content-length"], answer.body) == (200, "12", b"")


# -- content codings ---------------------------------------------------------------------

TEXT = b"a lighthouse at dawn, in watercolour. " * 200

CODINGS = [
    pytest.param("gzip", gzip.compress, id="gzip"),
    pytest.param("x-gzip", gzip.compress, id="x-gzip"),
    pytest.param("deflate", zlib.compress, id="deflate-zlib"),
    pytest.param("deflate", raw_deflate, id="deflate-raw"),
]


@pytest.mark.parametrize(("coding", "compress"), CODINGS)
async def test_a_compressed_body_is_decoded(
    client: h1.Client, raw: RawStart, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    body = compress(TEXT)
    server = await raw(answer_each(lambda request: response(body, f"Content-Encoding: {coding}")))

    answer = await call(client, server.url)

    assert answer.body == TEXT
    assert answer.headers["content-encoding"] == coding


async def test_a_chunked_gzip_body_is_decoded(client: h1.Client, raw: RawStart) -> None:
    body = gzip.compress(TEXT)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = await raw(
        answer_each(lambda request: head + chunk(body[:100]) + chunk(body[100:]) + LAST_CHUNK)
    )

    assert (await call(client, server.url)).body == TEXT


@pytest.mark.parametrize(("coding", "compress"), CODINGS)
async def test_a_compressed_body_larger_than_max_bytes_once_decoded_raises(
    client: h1.Client, raw: RawStart, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    body = compress(b"\0" * 100_000)
    assert len(body) < 1000
    server = await raw(answer_each(lambda request: response(body, f"Content-Encoding: {coding}")))

    with pytest.raises(h1.ResponseTooLarge):
        await call(client, server.url, max_bytes=99_999)
    assert (await call(client, server.url, max_bytes=100_000)).body == b"\0" * 100_000


async def test_a_corrupt_compressed_body_raises_protocol_error(
    client: h1.Client, raw: RawStart
) -> None:
    server = await raw(answer_once(response(b"not gzip at all", "Content-Encoding: gzip")))

    with pytest.raises(h1.ProtocolError):
        await call(client, server.url)
    await wait(server.conns[0].gone)


async def test_a_truncated_gzip_body_raises_protocol_error(
    client: h1.Client, raw: RawStart
) -> None:
    body = gzip.compress(os.urandom(4000))[:2000]  # correct Content-Length, half a stream
    server = await raw(answer_once(response(body, "Content-Encoding: gzip")))

    with pytest.raises(h1.ProtocolError):
        await call(client, server.url)


async def test_an_unsupported_content_coding_raises_protocol_error(
    client: h1.Client, raw: RawStart
) -> None:
    server = await raw(answer_once(response(b"xyz", "Content-Encoding: br")))

    with pytest.raises(h1.ProtocolError):
        await call(client, server.url)


# -- size limits ----------------------------------------------------------------------


async def test_a_content_length_above_max_bytes_raises_without_reading_the_body(
    client: h1.Client, raw: RawStart
) -> None:
    server = await raw(answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\nabc"))

    with pytest.raises(h1.ResponseTooLarge):
        await call(client, server.url, max_bytes=1000)
    await wait(server.conns[0].gone)


async def test_a_body_of_exactly_max_bytes_is_accepted(client: h1.Client, raw: RawStart) -> None:
    server = await raw(answer_each(lambda request: response(b"x" * 1000)))

    assert len((await call(client, server.url, max_bytes=1000)).body) == 1000


async def test_a_chunked_body_past_max_bytes_raises_as_it_arrives(
    client: h1.Client, raw: RawStart
) -> None:
    # The body never ends: only the running count can stop the call in time.
    server = await raw(answer_once(CHUNKED_HEAD + chunk(b"x" * 600) + chunk(b"x" * 600)))

    with pytest.raises(h1.ResponseTooLarge):
        await call(client, server.url, max_bytes=1000, max_seconds=SHORT)
    await wait(server.conns[0].gone)


async def test_a_close_delimited_body_past_max_bytes_raises_as_it_arrives(
    client: h1.Client, raw: RawStart
) -> None:
    server = await raw(answer_once(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1001))

    with pytest.raises(h1.ResponseTooLarge):
        await call(client, server.url, max_bytes=1000, max_seconds=SHORT)


@pytest.mark.parametrize("coding", ["gzip", "identity"])
async def test_a_chunked_body_with_a_content_encoding_is_limited_as_it_arrives(
    client: h1.Client, raw: RawStart, coding: str
) -> None:
    # Incompressible data: the coded size is about the decoded size, and the body never
    # ends. Whatever the coding, buffering it all up to the deadline is no limit.
    data = os.urandom(64 * 1024)
    coded = gzip.compress(data) if coding == "gzip" else data
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = await raw(answer_once(head.encode() + chunk(coded)))

    with pytest.raises(h1.ResponseTooLarge):
        await call(client, server.url, max_bytes=16 * 1024, max_seconds=SHORT)


async def test_an_identity_coded_body_past_max_bytes_is_not_returned(
    client: h1.Client, raw: RawStart
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = chunk(b"x" * 1000) * 3 + LAST_CHUNK
    server = await raw(answer_once(head + body))

    with pytest.raises(h1.ResponseTooLarge):
        await call(client, server.url, max_bytes=1000, max_seconds=SHORT)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(gzip.compress(b"\0" * 100_000), h1.ResponseTooLarge, id="too-large"),
        pytest.param(b"not gzip at all", h1.ProtocolError, id="corrupt"),
    ],
)
async def test_a_close_delimited_compressed_body_is_checked_like_any_other(
    client: h1.Client, raw: RawStart, body: bytes, error: type[h1.ClientError]
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n"
    server = await raw(answer_once(head + body, then_close=True))

    with pytest.raises(error):
        await call(client, server.url, max_bytes=1000, max_seconds=SHORT)


async def test_endless_response_headers_are_refused(client: h1.Client, raw: RawStart) -> None:
    # 2 MiB of header lines and no end to them: no response an API call waits for.
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(2048))
    server = await raw(answer_once(b"HTTP/1.1 200 OK\r\n" + headers))

    with pytest.raises(h1.ClientError):
        await call(client, server.url, max_bytes=LIMIT, max_seconds=SHORT)


# -- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"garbage\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", id="bad-header"),
        pytest.param(CHUNKED_HEAD + b"zz\r\nabc\r\n", id="bad-chunk-size"),
    ],
)
async def test_a_malformed_response_raises_protocol_error_and_drops_the_connection(
    client: h1.Client, raw: RawStart, data: bytes
) -> None:
    server = await raw(answer_once(data))

    with pytest.raises(h1.ProtocolError):
        await call(client, server.url)
    await wait(server.conns[0].gone)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="before-the-response"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Le", id="in-the-head"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", id="in-the-body"),
        pytest.param(CHUNKED_HEAD + chunk(b"abc"), id="in-a-chunked-body"),
    ],
)
async def test_a_connection_closed_mid_response_raises_connection_closed(
    client: h1.Client, raw: RawStart, data: bytes
) -> None:
    server = await raw(answer_once(data, then_close=True))

    with pytest.raises(h1.ConnectionClosed):
        await call(client, server.url)


async def test_transfer_coding_names_are_case_insensitive_so_a_cut_body_is_not_a_response(
    client: h1.Client, raw: RawStart
) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
    server = await raw(answer_once(head + chunk(b"the first half"), then_close=True))

    with pytest.raises(h1.ConnectionClosed):
        await call(client, server.url)


async def test_interim_responses_are_skipped(client: h1.Client, raw: RawStart) -> None:
    """1xx answers (a proxy's 100 Continue, 103 Early Hints) come before the real one."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    server = await raw(answer_each(lambda _: interim + response(b"the answer", "X-Real: yes")))

    answer = await call(client, server.url)

    assert (answer.status, answer.body, answer.headers.get("x-real")) == (200, b"the answer", "yes")
    assert "link" not in answer.headers
    again = await call(client, server.url)  # and the connection is still in step
    assert again.status == 200


async def test_a_protocol_switch_raises_protocol_error(client: h1.Client, raw: RawStart) -> None:
    server = await raw(answer_once(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"))

    with pytest.raises(h1.ProtocolError):
        await call(client, server.url)


async def test_nothing_listening_raises_connect_error(client: h1.Client) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(h1.ConnectError):
        await call(client, f"http://127.0.0.1:{port}/")


async def test_every_failure_is_a_client_error() -> None:
    for error in (h1.ConnectError, h1.ConnectionClosed, h1.ProtocolError, h1.ResponseTooLarge):
        assert issubclass(error, h1.ClientError)


# -- deadlines and cancellation -----------------------------------------------------------


async def test_no_answer_within_max_seconds_raises_timeout_and_closes_the_connection(
    client: h1.Client, raw: RawStart
) -> None:
    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if request.target == "/hang":
                return  # never answers; the server then waits for the client to close
            conn.send(response(b"fine"))

    server = await raw(handler)

    with pytest.raises(TimeoutError):
        await call(client, server.url + "/hang", max_seconds=0.2)

    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the deadline's cancellation was taken back
    await wait(server.conns[0].gone)
    assert (await call(client, server.url + "/next")).body == b"fine"
    assert server.accepted == 2


async def test_the_deadline_covers_a_half_sent_response(client: h1.Client, raw: RawStart) -> None:
    server = await raw(answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))

    with pytest.raises(TimeoutError):
        await call(client, server.url, max_seconds=0.2)
    await wait(server.conns[0].gone)


async def test_cancelling_a_call_mid_response_raises_cancelled_and_drops_the_connection(
    client: h1.Client, raw: RawStart
) -> None:
    sent = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if request.target == "/slow":
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                sent.set()
                return
            conn.send(response(b"fine"))

    server = await raw(handler)
    task = asyncio.create_task(call(client, server.url + "/slow", max_seconds=WAIT))
    await wait(sent)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    await wait(server.conns[0].gone)
    assert (await call(client, server.url + "/next")).body == b"fine"
    assert server.accepted == 2


# -- the pool --------------------------------------------------------------------------


async def test_max_connections_caps_open_connections_and_every_call_completes(
    make_client: ClientMaker, raw: RawStart
) -> None:
    client = make_client(max_connections=2)
    release, arrived = asyncio.Event(), asyncio.Event()
    server = await raw(hold_until(release, arrived, count=2))
    calls = [asyncio.create_task(call(client, f"{server.url}/{i}")) for i in range(5)]

    await wait(arrived)  # two connections, each with a held request
    release.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), WAIT)

    assert sorted(a.body for a in answers) == [f"/{i}".encode() for i in range(5)]
    assert server.max_open == 2
    assert server.accepted == 2  # the waiting calls took the freed keep-alive connections


async def test_max_per_host_caps_one_origin_and_leaves_others_alone(
    make_client: ClientMaker, raw: RawStart
) -> None:
    client = make_client(max_per_host=2)
    release, arrived = asyncio.Event(), asyncio.Event()
    busy = await raw(hold_until(release, arrived, count=2))
    other = await raw(answer_each(lambda request: response(b"other")))
    calls = [asyncio.create_task(call(client, f"{busy.url}/{i}")) for i in range(5)]
    await wait(arrived)  # the busy host is at its cap, three calls wait for it

    assert (await call(client, other.url)).body == b"other"  # not behind the busy host

    release.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), WAIT)
    assert sorted(a.body for a in answers) == [f"/{i}".encode() for i in range(5)]
    assert busy.max_open == 2
    assert busy.accepted == 2


async def test_waiting_for_a_connection_counts_against_max_seconds(
    make_client: ClientMaker, raw: RawStart
) -> None:
    client = make_client(max_connections=1)
    release, arrived = asyncio.Event(), asyncio.Event()
    server = await raw(hold_until(release, arrived))
    held = asyncio.create_task(call(client, server.url + "/held"))
    await wait(arrived)

    with pytest.raises(TimeoutError):
        await call(client, server.url + "/queued", max_seconds=0.2)

    release.set()
    assert (await held).body == b"/held"
    assert (await call(client, server.url + "/after")).body == b"/after"  # no slot leaked
    assert server.accepted == 1


async def test_a_caller_cancelled_while_waiting_for_a_connection_gives_up_its_place(
    make_client: ClientMaker, raw: RawStart
) -> None:
    client = make_client(max_connections=1)
    release, arrived = asyncio.Event(), asyncio.Event()
    server = await raw(hold_until(release, arrived))
    held = asyncio.create_task(call(client, server.url + "/held"))
    await wait(arrived)
    queued = asyncio.create_task(call(client, server.url + "/queued"))
    await asyncio.sleep(0)  # one loop turn: the call queues for the connection

    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    release.set()

    assert (await held).body == b"/held"
    assert (await call(client, server.url + "/after")).body == b"/after"
    assert [r.target for r in server.requests] == ["/held", "/after"]


async def test_a_caller_waiting_for_a_connection_is_served_before_a_later_caller(
    make_client: ClientMaker, raw: RawStart
) -> None:
    """First come, first served: a task that calls again at once does not jump the queue."""
    client = make_client(max_connections=1)
    release, arrived = asyncio.Event(), asyncio.Event()

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if request.target == "/a1":
                arrived.set()
                await release.wait()
            conn.send(response(request.target.encode()))

    server = await raw(handler)

    async def a() -> None:
        await call(client, server.url + "/a1")
        await call(client, server.url + "/a2")  # asked after b

    task_a = asyncio.create_task(a())
    await wait(arrived)
    task_b = asyncio.create_task(call(client, server.url + "/b"))
    await asyncio.sleep(0)  # one loop turn: b queues for the connection
    release.set()
    await asyncio.wait_for(asyncio.gather(task_a, task_b), WAIT)

    assert [r.target for r in server.requests] == ["/a1", "/b", "/a2"]


async def test_a_freed_connection_slot_is_not_lost_to_a_caller_that_cannot_use_it(
    make_client: ClientMaker, raw: RawStart
) -> None:
    """With max_per_host=1, a caller for a full origin must not swallow the wake-up
    that a caller for another origin needed."""
    client = make_client(max_connections=2, max_per_host=1)
    release_x, release_y = asyncio.Event(), asyncio.Event()
    x_arrived, y_arrived = asyncio.Event(), asyncio.Event()
    x = await raw(hold_until(release_x, x_arrived))
    y = await raw(hold_until(release_y, y_arrived))

    x1 = asyncio.create_task(call(client, x.url + "/x1"))
    await wait(x_arrived)
    y1 = asyncio.create_task(call(client, y.url + "/y1"))
    await wait(y_arrived)
    x2 = asyncio.create_task(call(client, x.url + "/x2"))  # waits: x is at its cap
    y2 = asyncio.create_task(call(client, y.url + "/y2", max_seconds=SHORT))
    await asyncio.sleep(0)  # one loop turn: both queue (x2 first)

    release_y.set()
    try:
        assert (await y1).body == b"/y1"
        assert (await y2).body == b"/y2"  # y has room; x's held call is no reason to wait
    finally:
        release_x.set()
        await asyncio.gather(x1, x2, return_exceptions=True)


# -- close() --------------------------------------------------------------------------


async def test_close_closes_idle_connections_and_later_calls_raise_connect_error(
    raw: RawStart,
) -> None:
    client = h1.Client()
    server = await raw(answer_each(lambda request: response()))
    await call(client, server.url)

    await client.close()

    await wait(server.conns[0].gone)
    with pytest.raises(h1.ConnectError):
        await call(client, server.url)
    assert server.accepted == 1


async def test_close_fails_callers_waiting_for_a_connection_and_drops_busy_ones_after(
    raw: RawStart,
) -> None:
    client = h1.Client(max_connections=1)
    release, arrived = asyncio.Event(), asyncio.Event()
    server = await raw(hold_until(release, arrived))
    held = asyncio.create_task(call(client, server.url + "/held"))
    await wait(arrived)
    queued = asyncio.create_task(call(client, server.url + "/queued"))
    await asyncio.sleep(0)  # one loop turn: the call queues for the connection

    await client.close()

    with pytest.raises(h1.ConnectError):
        await queued
    release.set()
    assert (await held).body == b"/held"  # the call in flight finishes...
    await wait(server.conns[0].gone)  # ...and its connection is closed, not kept


# -- what a hostile or odd upstream cannot do ----------------------------------------------


async def test_a_header_line_that_never_ends_is_refused_at_once(
    client: h1.Client, raw: RawStart
) -> None:
    """No end of line, so no header callback: the head is bounded as its bytes arrive."""

    async def endless(conn: Conn) -> None:
        if await conn.request() is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        while not conn.gone.is_set():
            conn.send(b"a" * 65536)
            await conn.writer.drain()

    server = await raw(endless)

    with pytest.raises(h1.ProtocolError, match="headers are too large"):
        await call(client, server.url, max_seconds=60)  # refused long before the deadline


async def test_many_small_chunks_cost_their_bytes_and_no_more(
    client: h1.Client, raw: RawStart
) -> None:
    """A body sent one byte per chunk is kept as one buffer, not one object per chunk."""
    body = bytes(range(256)) * 256  # 64 KiB, in 65,536 chunks
    wire = CHUNKED_HEAD + b"".join(chunk(body[i : i + 1]) for i in range(len(body))) + LAST_CHUNK
    server = await raw(answer_once(wire))

    tracemalloc.start()
    try:
        answer = await call(client, server.url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert answer.body == body
    assert peak < 16 * len(body), peak  # one object per chunk would be ~35 bytes a byte


async def test_a_call_cancelled_as_its_response_arrives_leaves_nothing_in_the_pool(
    client: h1.Client,
) -> None:
    """The response and the cancellation land in the same loop turn: the connection, which
    the server said it would close, is not kept for the next call."""
    caller: asyncio.Task[h1.Response] | None = None

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if b"\r\n\r\n" in data:
                self.transport.write(response(b"{}", "Connection: close"))  # type: ignore[attr-defined]
                assert caller is not None
                asyncio.get_running_loop().call_soon(caller.cancel)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        caller = asyncio.create_task(call(client, url))
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert all(not origin.idle for origin in client._origins.values())
        again = await call(client, url)  # a new connection, which answers
        assert again.body == b"{}"
    finally:
        server.close()


async def test_a_path_outside_ascii_is_percent_encoded(client: h1.Client, raw: RawStart) -> None:
    server = await raw(answer_each(lambda request: response(request.target.encode())))

    answer = await call(client, f"{server.url}/café/x%20y?q=é&r=a%2Fb")

    assert answer.body == b"/caf%C3%A9/x%20y?q=%C3%A9&r=a%2Fb"
