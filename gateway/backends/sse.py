"""Server-Sent Events from an upstream: OpenAI's streamed image generations and edits.

The gateway's pooled client (:mod:`gateway.backends.h1`) reads whole answers only, so a
streamed call goes through an ``aiohttp.ClientSession`` the backend owns (the API's
own URL, credentials in its headers, no redirects). The event stream is parsed as the
WHATWG HTML standard says (fields ``event`` and ``data``; a blank line ends an event;
``:`` lines are comments), with a bound on the size of one event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.backends import h1
from gateway.backends.upstream import Upstream
from gateway.errors import UpstreamError

__all__ = ["JSON_ANSWER", "ServerSentEvent", "open_session", "read_events"]

#: The one "event" of an upstream that answered a streamed call with plain JSON (one that
#: does not stream): its whole body.
JSON_ANSWER = "application/json"

_MAX_ERROR_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: bytes


def open_session() -> aiohttp.ClientSession:
    """A session for streamed API calls: no environment proxies, no cookies, no total
    timeout (the caller holds a deadline per event)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )


async def read_events(
    session: aiohttp.ClientSession,
    upstream: Upstream,
    url: str,
    body: Any,
    headers: Mapping[str, str],
    *,
    content: tuple[bytes, str] | None = None,
    max_event_bytes: int,
    max_json_bytes: int,
) -> AsyncGenerator[ServerSentEvent, None]:
    """POST ``body`` (JSON), or ``content`` (``(bytes, content type)``: a multipart
    form, an edit's) when ``body`` is ``None``, to ``url`` and yield the answer's events
    as they come; a JSON answer (up to ``max_json_bytes``) is one event named
    :data:`JSON_ANSWER`.

    Raises what :meth:`Upstream.call` raises for a non-2xx answer (the upstream's words
    judged the same way), and :class:`UpstreamError` for a connection that fails or an
    event over ``max_event_bytes``. Closing the iterator closes the connection.
    """
    if body is None and content is not None:
        payload, content_type = content
    else:
        payload, content_type = orjson.dumps(body), "application/json"
    all_headers = {**upstream.headers, "Content-Type": content_type, **headers}
    all_headers["Accept"] = "text/event-stream"
    try:
        response = await session.post(
            url, data=payload, headers=all_headers, allow_redirects=False, read_bufsize=2**16
        )
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"The image backend could not be reached ({type(exc).__name__}).", retryable=True
        ) from None
    try:
        if not 200 <= response.status < 300:
            raw = await _read(response, _MAX_ERROR_BYTES) or b""
            lowered = {k.lower(): v for k, v in response.headers.items()}
            raise upstream.status_error(h1.Response(response.status, lowered, raw))
        if response.content_type == JSON_ANSWER:
            whole = await _read(response, max_json_bytes)
            if whole is None:
                raise UpstreamError("The image backend sent a response that is too large.")
            yield ServerSentEvent(JSON_ANSWER, whole)
            return
        event, data = "", bytearray()
        async for line in _lines(response, max_event_bytes):
            if not line:
                if data:
                    yield ServerSentEvent(event, bytes(data[:-1]))  # without the last LF
                event, data = "", bytearray()
                continue
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"data":
                data += value + b"\n"
                if len(data) > max_event_bytes:
                    raise UpstreamError("The image backend sent an event that is too large.")
    finally:
        response.close()


async def _lines(response: aiohttp.ClientResponse, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's lines (LF or CRLF ended, without the ending) as they arrive."""
    pending = bytearray()
    while True:
        try:
            chunk = await response.content.readany()
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"The image backend's stream broke off ({type(exc).__name__})."
            ) from None
        if not chunk:
            if pending:
                yield bytes(pending)
            return
        start = len(pending)
        pending += chunk
        begin = 0
        at = pending.find(b"\n", start)
        while at >= 0:
            line = pending[begin:at]
            yield bytes(line[:-1] if line.endswith(b"\r") else line)
            begin = at + 1
            at = pending.find(b"\n", begin)
        del pending[:begin]
        if len(pending) > limit:
            raise UpstreamError("The image backend sent an event that is too large.")


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or ``None`` past ``limit`` bytes."""
    body = bytearray()
    try:
        while chunk := await response.content.readany():
            body += chunk
            if len(body) > limit:
                return None
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"The image backend's answer broke off ({type(exc).__name__})."
        ) from None
    return bytes(body)
