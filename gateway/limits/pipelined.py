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
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["PipelinedRedis", "PipelinedScript"]

_Arg = str | bytes | int | float


def _bulk(part: _Arg) -> bytes:
    data = part if isinstance(part, bytes) else str(part).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _encode(parts: tuple[_Arg, ...]) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join([_bulk(part) for part in parts])


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
            raise RedisConnectionError("the Redis connection is closed")
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

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        _, deadline = self._waiting[0]
        now = self._loop.time()
        if now >= deadline:
            self._fail(RedisTimeoutError(f"no reply from Redis within {self._timeout:g} s"))
        else:
            self._watchdog = self._loop.call_later(deadline - now, self._check_deadline)

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
    ``unix://``), opened on first use and again after it is lost."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._options = parse_url(url)
        self._tls = url.startswith("rediss://")
        self._timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *parts: _Arg) -> Any:
        return await self.send(_encode(parts))

    async def send(self, payload: bytes) -> Any:
        """Send one encoded command; its reply."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await connection.send(payload)

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
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
                            ssl=ssl.create_default_context() if self._tls else None,
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
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
            except BaseException:
                connection.close()
                raise
            self._connection = connection
            return connection

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class PipelinedScript:
    """A Lua script called with EVALSHA; loaded (once) when Redis does not know it."""

    def __init__(self, client: PipelinedRedis, source: str) -> None:
        self._client = client
        self._source = source
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

    async def __call__(self, keys: tuple[str, ...], args: list[_Arg] | tuple[_Arg, ...]) -> Any:
        client = self._client
        payload = self._head(len(keys), len(args)) + b"".join(
            [_bulk(part) for part in (*keys, *args)]
        )
        try:
            return await client.send(payload)
        except NoScriptError:  # a new or restarted Redis: it did not run
            await client.call("SCRIPT", "LOAD", self._source)
            return await client.send(payload)
