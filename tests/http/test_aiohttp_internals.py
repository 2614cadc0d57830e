"""The parts of aiohttp's ``RequestHandler`` that ``gateway/http/protocol.py`` relies on.

:class:`~gateway.http.protocol.GatewayRequestHandler` subclasses aiohttp's private
connection handler and reads its private state, for the header deadline and the JSON
answers to malformed HTTP. aiohttp is pinned to the minor release these tests pass with
(``pyproject.toml``); when a new aiohttp drops or changes one of those parts, a test here
names it, instead of the deadline or the answers silently ceasing to work.
"""

from __future__ import annotations

import ast
import asyncio
import collections
import inspect
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web, web_protocol, web_server
from aiohttp.streams import StreamReader

from gateway.http import protocol
from gateway.http.protocol import GatewayRequestHandler

#: Every private attribute of aiohttp's handler that protocol.py reads or sets, and the
#: kind of value it holds on a handler that has no connection yet.
PRIVATE_STATE: dict[str, type | tuple[type, ...]] = {
    "_close": bool,
    "_force_close": bool,
    "_upgraded": bool,
    "_request_in_progress": bool,
    "_request_count": int,
    "_messages": collections.deque,  # of (message, payload StreamReader) pairs
    "_payload_parser": type(None),  # set only while a websocket (an upgrade) reads
    "_loop": asyncio.AbstractEventLoop,
}

#: The handler's methods protocol.py overrides or calls, with the parameters it passes.
METHODS = {
    "__init__": ["self", "manager"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "finish_response": ["self", "request", "resp", "start_time"],
    "handle_error": ["self", "request", "status", "exc", "message"],
    "force_close": ["self"],
}

VERSION = f"aiohttp {aiohttp.__version__}"


async def ok(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text="ok")


def private_names_protocol_reads() -> set[str]:
    """``self._name`` in protocol.py, less what GatewayRequestHandler defines itself."""
    tree = ast.parse(Path(protocol.__file__).read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    }
    own = set(GatewayRequestHandler.__slots__) | {
        name for name in vars(GatewayRequestHandler) if name.startswith("_")
    }
    return used - own


def test_every_private_name_protocol_reads_is_checked_here():
    unchecked = private_names_protocol_reads() - set(PRIVATE_STATE)
    assert not unchecked, (
        f"gateway/http/protocol.py reads aiohttp's private {sorted(unchecked)}: "
        "add them to PRIVATE_STATE in this file"
    )


@pytest.mark.parametrize(("name", "kind"), PRIVATE_STATE.items(), ids=list(PRIVATE_STATE))
async def test_the_private_state_protocol_reads_is_still_there(
    name: str, kind: type | tuple[type, ...]
):
    loop = asyncio.get_running_loop()
    handler = web_protocol.RequestHandler(web_server.Server(ok, loop=loop), loop=loop)
    assert hasattr(handler, name), (
        f"{VERSION}: RequestHandler has no attribute {name!r} any more, which "
        "gateway/http/protocol.py reads: adapt GatewayRequestHandler before raising the pin"
    )
    value = getattr(handler, name)
    assert isinstance(value, kind), (
        f"{VERSION}: RequestHandler.{name} is now a {type(value).__name__}, not the "
        f"{kind} gateway/http/protocol.py expects: adapt GatewayRequestHandler"
    )


@pytest.mark.parametrize(("name", "parameters"), METHODS.items(), ids=list(METHODS))
def test_the_methods_protocol_overrides_keep_their_parameters(name: str, parameters: list[str]):
    method = getattr(web_protocol.RequestHandler, name, None)
    assert callable(method), f"{VERSION}: RequestHandler.{name} is gone"
    got = list(inspect.signature(method).parameters)
    assert got[: len(parameters)] == parameters, (
        f"{VERSION}: RequestHandler.{name} now takes {got}, not {parameters}: "
        "adapt GatewayRequestHandler"
    )


async def test_a_request_head_is_queued_in_messages_with_its_payload():
    """What ``data_received`` leaves behind, read by GatewayRequestHandler right after it:
    one more in ``_request_count``, and ``(message, payload)`` last in ``_messages``."""
    seen: list[tuple[int, int, list[object], bool | None]] = []

    class Probe(web_protocol.RequestHandler):
        def data_received(self, data: bytes) -> None:
            before = self._request_count
            super().data_received(data)
            messages = list(self._messages)
            payload = messages[-1][1] if messages and isinstance(messages[-1], tuple) else None
            eof = payload.is_eof() if isinstance(payload, StreamReader) else None
            seen.append((before, self._request_count, messages, eof))

    loop = asyncio.get_running_loop()
    server = web_server.Server(ok, loop=loop)
    listener = await loop.create_server(lambda: Probe(server, loop=loop), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        await writer.drain()
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.write(b"cd")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        listener.close()
        await server.shutdown(1)
    assert seen, f"{VERSION}: RequestHandler.data_received was never called"
    before, after, messages, eof = seen[0]
    assert after == before + 1, f"{VERSION}: _request_count does not count request heads"
    assert messages, f"{VERSION}: _messages does not queue request heads"
    last = messages[-1]
    assert isinstance(last, tuple), f"{VERSION}: _messages holds {type(last).__name__}"
    assert len(last) == 2, f"{VERSION}: _messages holds {len(last)}-tuples, not pairs"
    payload = last[1]
    assert isinstance(payload, StreamReader), (
        f"{VERSION}: _messages[-1][1] is a {type(payload).__name__}, not the request's "
        "payload StreamReader"
    )
    assert eof is False, f"{VERSION}: a payload with bytes still to come says it is at EOF"


async def test_install_makes_servers_build_the_gateway_handler(monkeypatch: pytest.MonkeyPatch):
    """``install`` replaces ``aiohttp.web_server.RequestHandler``, the name aiohttp's
    ``Server`` builds each connection's handler from."""
    assert isinstance(getattr(web_server, "RequestHandler", None), type), (
        f"{VERSION}: aiohttp.web_server.RequestHandler is gone: protocol.install() "
        "no longer reaches aiohttp's servers"
    )
    monkeypatch.setattr(web_server, "RequestHandler", web_server.RequestHandler)  # restored
    protocol.install()
    handler = web_server.Server(ok, loop=asyncio.get_running_loop())()
    assert isinstance(handler, GatewayRequestHandler), (
        f"{VERSION}: aiohttp's Server builds a {type(handler).__name__}, not through "
        "aiohttp.web_server.RequestHandler: protocol.install() has no effect"
    )
