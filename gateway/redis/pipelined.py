"""A small Redis client for the hot path: one connection per process, pipelined.

Every generation request makes exactly one Redis call (the admission script). With a
connection pool, each call checks a connection out, writes, waits and checks it back
in, and redis-py's layers around that cost more CPU than the gateway's own work. Here
all of a process's calls share one connection: each call appends its command to a
buffer and a future to a queue; the buffer is written once per event-loop iteration
(so concurrent requests' commands leave in one ``write``), and replies, parsed by
hiredis, resolve the futures in order. Redis answers a connection's commands in the
order it receives them, so the order of the queue is the order of the replies.

It speaks just what the hot path needs: ``EVALSHA`` (loading the script on
``NOSCRIPT``), and ``AUTH``/``SELECT`` from the URL when it connects. Errors are
redis-py's exception types, so callers handle both clients alike:

* the connection is lost (Redis restarted): every call waiting on it fails with
  ``ConnectionError``, and the next call connects again;
* a reply is later than ``timeout``: the connection is dropped (its replies can no
  longer be matched to their calls) and the calls waiting on it fail with
  ``TimeoutError``. A call that failed this way may have run; it is never resent.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Sequence
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import RedisSSLContext, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "HotRedis",
    "HotScript",
    "NotSent",
    "PipelinedRedis",
    "PipelinedScript",
    "ScriptText",
    "encode_command",
]

#: After a failed connect, calls fail at once for this long (no connect storm while
#: Redis is down), then the next call tries again.
RECONNECT_PAUSE_S = 0.25


class NotSent(RedisConnectionError):
    """The command never left this process: it certainly did not run."""


_Arg = str | bytes | int | float
#: What a script call takes: text and numbers.
_Text = str | int | float


def _bulk(part: _Arg) -> bytes:
    data = part if isinstance(part, bytes) else str(part).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _encode_parts(parts: tuple[_Text, ...]) -> bytes:
    """``parts`` as RESP bulk strings.

    Formatted into one string and encoded once: a third cheaper than a bytes object per
    part, for a call's usual text and numbers.
    """
    text = "".join([f"${len(t)}\r\n{t}\r\n" for t in map(str, parts)])
    if text.isascii():  # so that lengths in characters are lengths in bytes
        return text.encode("ascii")
    return b"".join([_bulk(part) for part in parts])


def encode_command(parts: tuple[_Arg, ...]) -> bytes:
    """A command as RESP."""
    return _encode(parts)


def _encode(parts: tuple[_Arg, ...]) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join([_bulk(part) for part in parts])


_ASKING = _encode(("ASKING",))


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class HotScript(Protocol):
    """A Lua script on the hot path: ``await script(keys=..., args=...)``."""

    async def __call__(self, keys: tuple[str, ...], args: Sequence[_Text]) -> Any: ...


class HotRedis(Protocol):
    """The hot path's client: :class:`PipelinedRedis`, or on a Redis Cluster
    :class:`gateway.redis.routed.RoutedRedis`."""

    def script(self, source: str) -> HotScript: ...

    async def aclose(self) -> None: ...


class _Connection(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        #: (future, deadline) per command sent or buffered, in order.
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._buffer: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while (reply := reader.gets()) is not False:
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(RedisConnectionError("unexpected reply from Redis"))
                return
            future, _ = waiting.popleft()
            if future.done():  # its caller gave up (cancelled)
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                future.set_exception(error(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis closed the connection ({exc or 'EOF'})"))

    # -- calls -----------------------------------------------------------------------

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise NotSent("the Redis connection is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiting.append((future, self._loop.time() + self._timeout))
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(payload)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout, self._check_deadline)
        return future

    def _flush(self) -> None:
        if self._buffer and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._buffer))
        self._buffer.clear()

    def _check_deadline(self, second_look: bool = False) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        _, deadline = self._waiting[0]
        now = self._loop.time()
        if now < deadline:
            self._watchdog = self._loop.call_later(deadline - now, self._check_deadline)
        elif not second_look:
            # The loop runs due timers before it reads sockets: after it was busy for a
            # while, the replies may be waiting unread. Look again after the next read
            # (a timer due later than now, so not in this same round of timers).
            self._watchdog = self._loop.call_later(0.001, self._check_deadline, True)
        else:
            self._fail(RedisTimeoutError(f"no reply from Redis within {self._timeout:g} s"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._buffer.clear()
        if self._transport is not None:
            self._transport.abort()
        waiting, self._waiting = self._waiting, collections.deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self._fail(RedisConnectionError("the Redis client is closed"))


class PipelinedRedis:
    """One pipelined connection to the Redis of ``url`` (``redis://``, ``rediss://``,
    ``unix://``, with redis-py's URL options), opened on first use and again after it
    is lost."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._options = parse_url(url)
        self._tls = url.lower().startswith("rediss://")
        self._timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._paused_until = 0.0
        self._last_error: BaseException | None = None
        self._closed = False

    async def call(self, *parts: _Arg) -> Any:
        return await self.send(_encode(parts))

    async def send(self, payload: bytes) -> Any:
        """Send one encoded command; its reply."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await connection.send(payload)

    async def send_asking(self, payload: bytes) -> Any:
        """``ASKING`` then the command, back to back on the connection (a Redis Cluster's
        ``ASK`` redirection: the slot is being imported by this node)."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        connection.send(_ASKING).add_done_callback(_retrieve)
        return await connection.send(payload)

    def script(self, source: str) -> PipelinedScript:
        return PipelinedScript(self, source)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise NotSent("the Redis client is closed")
        loop = asyncio.get_running_loop()
        if loop.time() < self._paused_until:
            raise NotSent(f"cannot connect to Redis: {self._last_error}")
        if self._connecting is None:  # one attempt, whoever is waiting for it
            self._connecting = loop.create_future()
            attempt = loop.create_task(self._open())
            attempt.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Task[_Connection]) -> None:
        waiters, self._connecting = self._connecting, None
        assert waiters is not None
        if attempt.cancelled():
            waiters.set_exception(NotSent("the connection to Redis was abandoned"))
        elif (error := attempt.exception()) is not None:
            self._last_error = error
            self._paused_until = asyncio.get_running_loop().time() + RECONNECT_PAUSE_S
            waiters.set_exception(error)
        elif self._closed:
            attempt.result().close()
            waiters.set_exception(NotSent("the Redis client is closed"))
        else:
            self._connection = attempt.result()
            waiters.set_result(self._connection)
        # Mark an error as retrieved: its waiters may all have gone (cancelled), and
        # asyncio would log it as never retrieved.
        waiters.exception()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self._options
        connection = _Connection(self._timeout)
        try:
            async with asyncio.timeout(self._timeout):
                if "path" in options:
                    await loop.create_unix_connection(lambda: connection, options["path"])
                else:
                    await loop.create_connection(
                        lambda: connection,
                        options.get("host", "localhost"),
                        options.get("port", 6379),
                        ssl=self._ssl_context() if self._tls else None,
                    )
                if options.get("password"):
                    auth: tuple[_Arg, ...] = (options["password"],)
                    if options.get("username"):
                        auth = (options["username"], *auth)
                    await connection.send(_encode(("AUTH", *auth)))
                if options.get("db"):
                    await connection.send(_encode(("SELECT", options["db"])))
        except (OSError, TimeoutError) as exc:
            connection.close()
            raise NotSent(f"cannot connect to Redis: {exc or type(exc).__name__}") from None
        except BaseException:
            connection.close()
            raise
        return connection

    def _ssl_context(self) -> ssl.SSLContext:
        """As redis-py's own ``rediss://`` connections would make it, from the URL."""
        o: dict[str, Any] = dict(self._options)
        return RedisSSLContext(
            keyfile=o.get("ssl_keyfile"),
            certfile=o.get("ssl_certfile"),
            cert_reqs=o.get("ssl_cert_reqs", "required"),
            ca_certs=o.get("ssl_ca_certs"),
            ca_data=o.get("ssl_ca_data"),
            ca_path=o.get("ssl_ca_path"),
            check_hostname=o.get("ssl_check_hostname", True),
            min_version=o.get("ssl_min_version"),
            ciphers=o.get("ssl_ciphers"),
            password=o.get("ssl_password"),
        ).get()

    async def aclose(self) -> None:
        """Close the connection; later calls fail with :class:`NotSent`."""
        self._closed = True
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ScriptText:
    """A Lua script's source, its SHA-1 and its encoded ``EVALSHA`` calls."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        #: The encoded start of a call, per (number of keys, number of arguments).
        self._heads: dict[tuple[int, int], bytes] = {}

    def _head(self, keys: int, args: int) -> bytes:
        head = self._heads.get((keys, args))
        if head is None:
            head = b"*%d\r\n" % (3 + keys + args) + b"".join(
                [_bulk("EVALSHA"), _bulk(self.sha), _bulk(keys)]
            )
            self._heads[keys, args] = head
        return head

    def payload(self, keys: tuple[str, ...], args: Sequence[_Text]) -> bytes:
        """The encoded ``EVALSHA`` call."""
        return self._head(len(keys), len(args)) + _encode_parts((*keys, *args))


class PipelinedScript(ScriptText):
    """A Lua script called with EVALSHA; loaded (once) when Redis does not know it."""

    def __init__(self, client: PipelinedRedis, source: str) -> None:
        super().__init__(source)
        self._client = client

    async def __call__(self, keys: tuple[str, ...], args: Sequence[_Text]) -> Any:
        client = self._client
        payload = self._head(len(keys), len(args)) + _encode_parts((*keys, *args))
        try:
            return await client.send(payload)
        except NoScriptError:  # a new or restarted Redis: it did not run
            await client.call("SCRIPT", "LOAD", self.source)
            return await client.send(payload)
