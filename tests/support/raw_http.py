"""HTTP/1.1 over a raw socket: for the requests a client library refuses to send.

The rules the hostile-input tests check with these: a bad request is a 4xx (an
OpenAI-shaped JSON error where the gateway's own code answers), never a 5xx, and the
server stays healthy for the next client on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from tests.support.processes import Served

__all__ = [
    "GENERATION_BODY",
    "PROMPT_ANSWER_SECONDS",
    "Conversation",
    "RawResponse",
    "assert_healthy",
    "check_error",
    "converse",
    "exchange",
    "http_request",
    "json_auth",
    "raw_request",
    "read_response",
]

#: What a well-behaved server must answer within, for a request that needs no upstream.
PROMPT_ANSWER_SECONDS = 5.0
#: A valid generation request body.
GENERATION_BODY = b'{"prompt": "p", "size": "256x256"}'


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes = b""
    raw_head: bytes = b""

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Conversation:
    """Everything a server said on one connection, up to its close (or our timeout)."""

    responses: list[RawResponse] = field(default_factory=list)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    body = b""
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    elif status >= 200 and status not in (204, 304):
        body = await reader.read()  # delimited by the close
    return RawResponse(status, headers, body, head)


async def converse(
    port: int, data: bytes, *, timeout: float = PROMPT_ANSWER_SECONDS, half_close: bool = False
) -> Conversation:
    """Send ``data`` on a fresh connection; read responses until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = Conversation()
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                response = await asyncio.wait_for(read_response(reader), remaining)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                break
            out.responses.append(response)
            if response.headers.get("Connection", "").lower() == "close":
                break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return out


async def exchange(port: int, data: bytes) -> RawResponse:
    """One request, one response (the request should say ``Connection: close``)."""
    conversation = await converse(port, data)
    assert conversation.responses, "the server sent no response"
    return conversation.responses[0]


async def raw_request(port: int, data: bytes, *, hang_up: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; the first response, head and body, as bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if hang_up:
            return b""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            return head + await asyncio.wait_for(reader.read(), 10)
        return head + await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
    finally:
        writer.close()


def http_request(
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    content_length: int | None = None,
    close: bool = True,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def json_auth(credential: str) -> list[tuple[str, str]]:
    """``http_request`` headers: ``credential`` as a bearer token, and a JSON body."""
    return [("Authorization", f"Bearer {credential}"), ("Content-Type", "application/json")]


def check_error(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    """``response`` is the gateway's own OpenAI-shaped error with ``status`` and ``code``."""
    assert response.status == status, (response.status, response.body[:500])
    assert response.headers.get("Content-Type", "").startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert "Traceback" not in error["message"]
    return dict(error)


async def assert_healthy(served: Served, key: str | None = None) -> None:
    """A normal request on a fresh connection is served at once."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/healthz") as response:
            assert response.status == 200
        if key is not None:
            async with session.post(
                f"{served.url}/v1/images/generations",
                json={"prompt": "still fine", "size": "256x256"},
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                assert response.status == 200, await response.text()
