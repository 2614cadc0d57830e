"""The gateway's HTTP/1.1 connection handler: answers to malformed requests, and a
deadline for request headers.

aiohttp answers malformed HTTP itself, in text/plain that can echo the offending bytes,
and logs them, raw bytes (and so any API key in them) included.
:class:`GatewayRequestHandler` answers in the gateway's own JSON error shape with its
usual headers, and logs only the kind of error.

aiohttp has no deadline for request headers: a client that sends them a byte at a time
(slowloris) holds its connection until the keep-alive timer drops it. The gateway gives
every request head ``server.header_read_timeout_seconds`` from its first byte (from the
connection's start for the first request); a connection that misses it is closed.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web, web_server
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway import errors
from gateway.http.responses import error_body

if TYPE_CHECKING:
    from aiohttp.web_server import Server

__all__ = ["DEFAULT_HEADER_READ_TIMEOUT", "GatewayRequestHandler", "connection_closed", "install"]

log = logging.getLogger("gateway.protocol")

#: For servers that are not given ``header_read_timeout`` (the same as the config's default).
DEFAULT_HEADER_READ_TIMEOUT = 10.0


class _Malformed(errors.GatewayError):
    code, type = "invalid_request", "invalid_request_error"
    default_message = "The HTTP request is malformed."


class GatewayRequestHandler(RequestHandler):
    """aiohttp's handler with the gateway's answers to malformed HTTP and a header deadline.

    Args:
        header_read_timeout: Seconds a request head may take to arrive, counted from the
            connection's start for the first request and from the first byte of each
            later one (or from the end of the request before it, whichever is later). An
            idle kept-alive connection is left to the keep-alive timer.
    """

    __slots__ = (
        "_closed",
        "_head_since",
        "_header_deadline",
        "_header_read_timeout",
        "_last_payload",
    )

    def __init__(
        self,
        manager: Server,
        *,
        header_read_timeout: float = DEFAULT_HEADER_READ_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_read_timeout = header_read_timeout
        #: When the request head now arriving began (loop time); None between heads.
        self._head_since: float | None = None
        #: Armed at most once at a time, and not re-armed per request: when it fires it
        #: closes the connection if the head in progress is late, else it is armed again
        #: for that head's own deadline (cheaper than a timer per request).
        self._header_deadline: asyncio.TimerHandle | None = None
        # The body of the latest request whose head is in: bytes that arrive once it is
        # complete are the next request's head.
        self._last_payload: StreamReader = EMPTY_PAYLOAD
        #: Made on demand (:meth:`closed`): a streamed answer waits on it.
        self._closed: asyncio.Future[None] | None = None

    def closed(self) -> asyncio.Future[None]:
        """Done when the connection is lost: the client left (aiohttp does not cancel
        handlers when that happens, so one that waits long can wait on this)."""
        if self._closed is None:
            self._closed = self._loop.create_future()
            if self.transport is None:
                self._closed.set_result(None)
        return self._closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._head_since = None
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        head_begins = (
            self._head_since is None
            and data
            and self._last_payload.is_eof()
            and not (self._force_close or self._close or self._upgraded)
            and self._payload_parser is None
        )
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:  # a head is complete (or is a parse error)
            self._stop_header_deadline()
            if self._messages:
                self._last_payload = self._messages[-1][1]
        elif head_begins:  # the first bytes of a head that is not complete yet
            self._start_header_deadline()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            # A head that began behind this request (pipelined) gets its full time from
            # now, when the connection turns to it.
            if self._head_since is not None:
                self._start_header_deadline()

    def _start_header_deadline(self) -> None:
        self._head_since = since = self._loop.time()
        if self._header_deadline is None:
            self._arm(since + self._header_read_timeout)

    def _stop_header_deadline(self) -> None:
        self._head_since = None  # the timer, if armed, finds no head when it fires

    def _arm(self, when: float) -> None:
        self._header_deadline = self._loop.call_at(when, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        since = self._head_since
        if since is None or self._force_close or self.transport is None:
            return
        due = since + self._header_read_timeout
        if self._loop.time() < due:  # a later head than the one that armed it
            self._arm(due)
            return
        if self._request_in_progress:  # a pipelined head: finish_response restarts it
            self._arm(self._loop.time() + self._header_read_timeout)
            return
        peer = self.peername
        log.info(
            "closed a connection from %s: request headers not complete within %gs",
            peer[0] if isinstance(peer, tuple) else peer,
            self._header_read_timeout,
        )
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error(
                "error handling a request from %s (%s)",
                request.remote,
                type(exc).__name__ if exc else "unknown",
            )
            error: errors.GatewayError = errors.GatewayError()
        else:
            log.info(
                "rejected a malformed request from %s (%s)",
                request.remote,
                type(exc).__name__ if exc else "unknown",
            )
            error = _Malformed(f"The HTTP request is malformed ({HTTPStatus(status).phrase}).")
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already under way")
        response = web.Response(
            status=status,
            body=orjson.dumps(error_body(error)),
            content_type="application/json",
            headers={"X-Content-Type-Options": "nosniff", "Server": "image-gateway"},
        )
        response.force_close()
        return response


def connection_closed(request: web.BaseRequest) -> asyncio.Future[None] | None:
    """Done when ``request``'s connection is lost; ``None`` where the server does not
    run :class:`GatewayRequestHandler` (then only a failed write tells)."""
    protocol = request.protocol
    return protocol.closed() if isinstance(protocol, GatewayRequestHandler) else None


def install() -> None:
    """Make this process's aiohttp servers use :class:`GatewayRequestHandler`.

    Pass ``header_read_timeout`` to the server (``web.run_app``, ``web.AppRunner``) to set
    its header deadline; aiohttp hands such keywords to every connection's handler.
    """
    web_server.RequestHandler = GatewayRequestHandler  # type: ignore[attr-defined]
