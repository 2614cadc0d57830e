"""A lean HTTP/1.1 client for upstream API calls: pooled keep-alive connections.

Each call is one request and one whole, size-limited response, which is all an API call
needs. That lets a call be a handful of Python lines around llhttp (the parser Node.js
uses, through ``httptools``): the request head is formatted in one string, written in
one ``write``, and parsed by one protocol object that hands the caller a finished
:class:`Response`. ``aiohttp.ClientSession`` stays in use for image downloads (they
follow redirects) and for third-party backends; this client does what every backend
request costs, at roughly a third of the CPU time (see BENCHMARKS.md).

Promises:

* One deadline per call covers waiting for a connection, connecting, sending and
  reading; past it the call raises :class:`TimeoutError` and its connection is closed.
* At most ``max_connections`` connections in all (and ``max_per_host`` per origin, if
  set); callers beyond that wait, first come first served.
* A connection goes back to the pool only after a whole response that allows
  keep-alive; idle connections are closed after ``idle_seconds``. A cancelled call
  closes its connection (its response would be left unread on it).
* Every failure to talk HTTP is a :class:`ClientError`: :class:`ConnectError` when no
  connection could be made (nothing was sent), :class:`ConnectionClosed`,
  :class:`ProtocolError` for a malformed response, :class:`ResponseTooLarge` past
  ``max_bytes`` (decoded).
* A body is one buffer. With a ``Content-Length`` (within ``max_bytes``) it is allocated
  once at that size, not zeroed (:mod:`gateway.backends.buffers`), and, after the read
  that brought the head, the socket reads straight into it
  (:class:`asyncio.BufferedProtocol`): the kernel's copy is the only one, where a plain
  protocol costs three more (a ``bytes`` per read, httptools' ``bytes`` per body
  piece, the join) and a growing buffer reallocates as it grows. A 1.4 MB image answer
  costs the caller about half the CPU time it did (see BENCHMARKS.md, "Image relay").
  Callers get that buffer (``bytearray``; ``bytes`` when the body came in one piece) and
  may keep views into it.

Header names and values are checked for CR/LF, so nothing a client sends can split
the request. No proxies are used (``aiohttp`` was not asked to trust the environment
either) and redirects are not followed: a response is returned as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import Literal
from urllib.parse import quote, urlsplit

import aiohappyeyeballs
import httptools

from gateway import __version__
from gateway.backends.buffers import body_buffer
from gateway.deadline import Deadline

__all__ = [
    "Client",
    "ClientError",
    "ConnectError",
    "ConnectionClosed",
    "ProtocolError",
    "Response",
    "ResponseTooLarge",
]

USER_AGENT = f"image-gateway/{__version__}"
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
#: The most header bytes (names and values) accepted in a response.
MAX_HEADER_BYTES = 64 * 1024
_DEFAULT_HEADERS = f"User-Agent: {USER_AGENT}\r\nAccept-Encoding: gzip, deflate\r\n"
#: The most one read takes into the shared scratch buffer (heads, small or chunked bodies).
_SCRATCH_BYTES = 64 * 1024


class ClientError(Exception):
    """The HTTP exchange failed."""


class ConnectError(ClientError):
    """No connection could be made; nothing was sent."""


class ConnectionClosed(ClientError):
    """The connection closed before the whole response arrived."""


class ProtocolError(ClientError):
    """The upstream sent something that is not a valid HTTP/1.1 response."""


class ResponseTooLarge(ClientError):
    """The response body is larger than the call allows."""


class Response:
    """A whole response: status, headers (names in lower case), decoded body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes | bytearray) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes)"


class _Origin:
    """Where requests for one ``scheme://host:port`` go, and its idle connections."""

    __slots__ = ("busy", "host", "host_header", "idle", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int, host_header: str) -> None:
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.host_header = host_header
        #: Connections ready for a request, the most recently used last.
        self.idle: list[_Connection] = []
        self.busy = 0


class _Target:
    """A URL split once: its origin and the request line's target."""

    __slots__ = ("origin", "path")

    def __init__(self, origin: _Origin, path: str) -> None:
        self.origin = origin
        self.path = path


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; parses the response to the request in flight.

    Bytes are read into ``scratch`` (shared by the client's connections: each read is
    parsed before the next one starts) and fed to the parser, except a sized body's
    once its head is in: those are read into the body's own buffer.
    """

    def __init__(
        self,
        origin: _Origin,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[_Connection], None],
        scratch: memoryview,
    ) -> None:
        self.origin = origin
        self._loop = loop
        self._on_lost = on_lost
        self._scratch = scratch
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._head_request = False
        self._limit = 0
        self._new_response()

    def _new_response(self) -> None:
        """Forget what was read of a response: a new request's, or after a 1xx."""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0  # names and values of the complete header lines
        self._head_bytes = 0  # raw bytes of a head still arriving
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end is not the close
        #: The body so far: bytes while it is one piece (most are), then a bytearray:
        #: allocated at its Content-Length (``_sized``) or grown as chunks arrive.
        self._body: bytes | bytearray = b""
        self._sized = 0  # the Content-Length of a body that has one (0: none, or empty)
        self._filled = 0  # bytes of a sized body so far
        self._direct = False  # the socket reads straight into the sized body
        self._status = 0

    # -- the caller's side --------------------------------------------------------

    def send(
        self, head: bytes, body: bytes | None, limit: int, *, head_request: bool = False
    ) -> asyncio.Future[Response]:
        assert self.transport is not None
        assert self._waiter is None
        if self.closed or self.transport.is_closing():
            raise ConnectionClosed("the connection closed before the request was sent")
        self._waiter = waiter = self._loop.create_future()
        self._head_request = head_request
        self._limit = limit
        self._new_response()
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)
        return waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: ClientError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    # -- asyncio.BufferedProtocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._direct:
            body = self._body
            assert type(body) is bytearray
            return memoryview(body)[self._filled :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if not self._direct:
            self.data_received(self._scratch[:nbytes])
            return
        self._filled += nbytes
        if self._filled == self._sized:
            self._direct = False
            # That parser still waits for the body it never saw: the next response on
            # this connection gets a new one.
            keep_alive = self._parser.should_keep_alive()
            self._parser = httptools.HttpResponseParser(self)
            self._deliver(keep_alive)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._waiter is None:  # bytes nobody asked for: this connection is unusable
            self.abort()
            return
        in_head = not self._headers_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            pass  # a callback failed the call already
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(ProtocolError("malformed HTTP response"))
            return
        if self._waiter is None:
            return
        if in_head and not self._headers_done:
            # Still in the head: the parser holds a header line that has not ended, which
            # on_header (called only once a line ends) cannot see. Bound it here.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES + 1024:  # and a status line
                self._fail(ProtocolError("the response headers are too large"))
        elif self._filled < self._sized:
            # The rest of a sized body: read straight into its buffer, not parsed.
            if type(self._body) is not bytearray:
                self._body = body_buffer(self._sized)
            self._direct = True

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # close the transport; connection_lost settles the call

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            self._on_lost(self)  # an idle connection: the pool forgets it
            return
        if waiter.done():
            return
        if self._headers_done and not self._framed and exc is None:
            try:  # a body delimited by the close
                waiter.set_result(self._response())
            except ClientError as error:
                waiter.set_exception(error)
        else:
            waiter.set_exception(ConnectionClosed("the connection closed mid-response"))

    # -- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second response to one request
            self.abort()
            raise httptools.HttpParserCallbackError

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(ProtocolError("the response headers are too large"))
            raise httptools.HttpParserCallbackError
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self._headers:  # repeated: joined as RFC 9110 allows for lists
            text = self._headers[key] + ", " + text
        self._headers[key] = text

    def on_headers_complete(self) -> None:
        self._headers_done = True
        headers = self._headers
        if self._head_request:  # no body follows, whatever the headers say
            waiter, self._waiter = self._waiter, None
            self.abort()  # the parser would wait for one: not reused
            if waiter is not None and not waiter.done():
                waiter.set_result(Response(self._parser.get_status_code(), headers, b""))
            raise httptools.HttpParserCallbackError
        status = self._status = self._parser.get_status_code()
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._framed = length is not None or chunked
        if length is not None and length.isdigit():
            size = int(length)
            if size > self._limit:
                self._fail(ResponseTooLarge("the response is too large"))
                raise httptools.HttpParserCallbackError
            if not chunked and status >= 200 and status not in (204, 304):  # 204/304: no body
                self._sized = size

    def on_body(self, body: bytes) -> None:
        sized = self._sized
        if sized:  # framing keeps it within Content-Length, checked against the limit
            filled = self._filled
            if not filled and len(body) == sized:  # in one piece: kept as it is
                self._body = body
            else:
                if not filled:
                    self._body = body_buffer(sized)
                end = filled + len(body)
                self._body[filled:end] = body  # type: ignore[index]
            self._filled += len(body)
            return
        # Counted as it arrives, compressed or not: a compressed body is never larger
        # than what it decodes to, save a few bytes for incompressible data.
        so_far = self._body
        if len(so_far) + len(body) > self._limit:
            self._fail(ResponseTooLarge("the response is too large"))
            raise httptools.HttpParserCallbackError
        if not so_far:
            self._body = body
        else:
            if type(so_far) is bytes:
                so_far = self._body = bytearray(so_far)
            so_far += body

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # an interim response: the real one follows
            self._new_response()
            return
        self._deliver(self._parser.should_keep_alive())

    def _deliver(self, keep_alive: bool) -> None:
        """The response is whole: the caller gets it."""
        if not keep_alive:
            self.abort()
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        try:
            waiter.set_result(self._response())
        except ClientError as exc:
            waiter.set_exception(exc)
            self.abort()
        finally:
            self._body = b""  # the caller's now: an idle connection holds no body

    def _response(self) -> Response:
        status = self._status
        if 100 <= status < 200:
            raise ProtocolError("a protocol switch was not asked for")
        if self._filled != self._sized:  # never so: a sized buffer is not zeroed first
            raise ProtocolError("the body is shorter than its Content-Length")
        body = self._body
        coding = self._headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("identity", ""):
            body = _decode(body, coding, self._limit)
        return Response(status, self._headers, body)


def _decode(body: bytes | bytearray, coding: str, limit: int) -> bytes:
    """``body`` with its gzip or deflate coding undone, at most ``limit`` bytes of it."""
    if coding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif coding == "deflate":  # zlib-wrapped per RFC 9110; raw deflate from some servers
        decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS if body[:1] == b"x" else -zlib.MAX_WBITS)
    else:
        raise ProtocolError(f"unsupported content coding {coding[:40]!r}")
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise ProtocolError("a compressed body is corrupt") from None
    if len(data) > limit:
        raise ResponseTooLarge("the response is too large")
    if body and not decoder.eof:
        raise ProtocolError("a compressed body is cut short")
    return data


def _check_header(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError("a header name or value holds CR or LF")
    return text


class Client:
    """Pooled keep-alive HTTP/1.1 connections to any number of origins.

    Args:
        max_connections: Connections open at once, in all.
        max_per_host: Connections open at once to one origin (0: no cap of its own).
        idle_seconds: An idle connection older than this is closed, not reused.
        ssl_context: For ``https`` URLs (default: the system's trust store, verified).
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_per_host: int = 0,
        idle_seconds: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max = max_connections
        self._max_per_host = max_per_host
        self._idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._targets: dict[str, _Target] = {}
        #: Connections open or being opened, idle ones included.
        self._open = 0
        #: Callers waiting for a connection, in order: each future gets a connection,
        #: or ``None`` for leave to open one (already counted in ``_open``).
        self._waiters: deque[tuple[_Origin, asyncio.Future[_Connection | None]]] = deque()
        self._closed = False
        #: Where connections read what is not a sized body's rest (one read at a time).
        self._scratch = memoryview(bytearray(_SCRATCH_BYTES))

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_bytes: int,
        max_seconds: float,
    ) -> Response:
        """Send one request; its whole response (any status).

        Raises:
            ClientError: the exchange failed (see the module's docstring).
            TimeoutError: no whole response within ``max_seconds``.
            ValueError: ``url`` is not an absolute http(s) URL, or a header holds CR/LF
                or a character outside Latin-1.
        """
        target = self._target(url)
        origin = target.origin
        lines = [
            f"{_check_header(method)} {target.path} HTTP/1.1\r\nHost: {origin.host_header}\r\n"
        ]
        lines.append(_DEFAULT_HEADERS)
        if headers:
            lines += [f"{_check_header(k)}: {_check_header(v)}\r\n" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")

        deadline = Deadline(max_seconds)
        connection: _Connection | None = None
        response: Response | None = None
        try:
            connection = await self._acquire(origin)
            response = await connection.send(head, body, max_bytes, head_request=method == "HEAD")
        except asyncio.CancelledError:
            if deadline.expired():
                raise TimeoutError() from None
            raise
        finally:
            deadline.cancel()
            if connection is not None:
                if response is None:  # no whole response (or one that came as the call
                    connection.abort()  # was cancelled): what is left on it is not ours
                self._release(connection)
        return response

    async def close(self) -> None:
        """Close every idle connection; calls waiting for one fail with ConnectError.

        A call in flight finishes; its connection is closed then.
        """
        self._closed = True
        for origin in self._origins.values():
            for connection in origin.idle:
                connection.abort()
                self._open -= 1
            origin.idle.clear()
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectError("the client is closed"))

    # -- the pool ---------------------------------------------------------------------

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is not None:
            return target
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an absolute http(s) URL")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        key = (parts.scheme, host, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(parts.scheme, host, port, host_header)
        # Percent-encoded as aiohttp does (what is already encoded stays as it is).
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_QUERY_SAFE)
        _check_header(path)
        if " " in path:
            raise ValueError("a URL with a space in its path")
        target = _Target(origin, path)
        if len(self._targets) >= 1024:  # URLs with ids in them (job polls): forget old ones
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _acquire(self, origin: _Origin) -> _Connection:
        if self._closed:
            raise ConnectError("the client is closed")
        if not self._waiters:  # nobody is ahead of this caller
            granted = self._grant(origin)
            if granted is not False:
                return granted if granted is not None else await self._connect(origin)
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        entry = (origin, waiter)
        self._waiters.append(entry)
        self._dispatch()
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(origin, waiter.result())  # granted, then cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            raise
        return granted if granted is not None else await self._connect(origin)

    def _grant(self, origin: _Origin) -> _Connection | Literal[False] | None:
        """An idle connection to ``origin``; ``None``: leave to open one; ``False``: wait."""
        idle = origin.idle
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.closed or now - connection.idle_since > self._idle_seconds:
                self._forget(connection)
                continue
            origin.busy += 1
            return connection
        if self._max_per_host and origin.busy >= self._max_per_host:
            return False
        if self._open >= self._max and not self._drop_an_idle_connection():
            return False
        self._open += 1
        origin.busy += 1
        return None

    def _dispatch(self) -> None:
        """Serve the waiting callers that can go now, first come first served."""
        if not self._waiters:
            return
        still: deque[tuple[_Origin, asyncio.Future[_Connection | None]]] = deque()
        while self._waiters:
            origin, waiter = entry = self._waiters.popleft()
            if waiter.done():
                continue
            granted = self._grant(origin)
            if granted is False:
                still.append(entry)
            else:
                waiter.set_result(granted)
        self._waiters = still

    def _give_back(self, origin: _Origin, granted: _Connection | None) -> None:
        if granted is None:  # leave to open a connection, unused
            self._open -= 1
            origin.busy -= 1
            self._dispatch()
        else:
            self._release(granted)

    async def _connect(self, origin: _Origin) -> _Connection:
        """Open a connection to ``origin``; its place is already counted in the pool."""
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            # Every address the name has, IPv6 and IPv4 raced as aiohttp does (RFC 8305),
            # so an address that drops packets costs 0.25 s, not the whole deadline.
            addresses = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
            sock = await aiohappyeyeballs.start_connection(
                addresses, happy_eyeballs_delay=0.25, interleave=1, loop=loop
            )
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin, loop, self._lost, self._scratch),
                    sock=sock,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
            except BaseException:
                sock.close()
                raise
        except BaseException as exc:
            self._give_back(origin, None)
            if isinstance(exc, OSError | ssl.SSLError):
                raise ConnectError(f"cannot connect ({type(exc).__name__})") from None
            raise
        return connection

    def _release(self, connection: _Connection) -> None:
        origin = connection.origin
        origin.busy -= 1
        if connection.closed or connection._waiter is not None or self._closed:
            connection.abort()  # closed, or a response still due on it: never reused
            self._open -= 1
        else:
            connection.idle_since = now = time.monotonic()
            idle = origin.idle
            idle.append(connection)
            # The oldest idle connection comes first: close those past their time.
            while idle and now - idle[0].idle_since > self._idle_seconds:
                self._forget(idle.pop(0))
        self._dispatch()

    def _lost(self, connection: _Connection) -> None:
        """An idle connection closed (by the server, or aborted by the pool)."""
        idle = connection.origin.idle
        if connection in idle:
            idle.remove(connection)
            self._open -= 1
            self._dispatch()

    def _forget(self, connection: _Connection) -> None:
        """Close a connection taken out of an idle list."""
        connection.abort()
        self._open -= 1

    def _drop_an_idle_connection(self) -> bool:
        """Close one idle connection (to any origin) to make room; False if none."""
        for origin in self._origins.values():
            if origin.idle:
                self._forget(origin.idle.pop(0))
                return True
        return False
