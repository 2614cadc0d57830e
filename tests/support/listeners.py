"""A TCP listener that counts the connections it accepts, for the egress tests.

It speaks just enough HTTP/1.1 to serve fixed answers by path (an image, a redirect,
an error), one request per connection. ``accepts`` counts connections, not requests:
a test that says "nothing reached it" means no TCP connection was ever accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Answer", "Listener", "free_port_on"]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def free_port_on(*hosts: str) -> int:
    """A port that is free on every one of ``hosts`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET) as first:
            first.bind((hosts[0], 0))
            port = int(first.getsockname()[1])
            try:
                for host in hosts[1:]:
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    with socket.socket(family) as other:
                        other.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no common free port on {hosts}")


class Listener:
    """Listens on ``hosts`` (one port for all); answers ``routes[path]``, else 404."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts or ("127.0.0.1",)
        self.port = 0
        self.accepts = 0
        self.requests: list[bytes] = []
        self.routes: dict[str, Answer] = {}
        self._servers: list[asyncio.Server] = []

    def url(self, path: str, host: str | None = None) -> str:
        host = host or self.hosts[0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> Listener:
        self.port = free_port_on(*self.hosts)
        for host in self.hosts:
            self._servers.append(await asyncio.start_server(self._handle, host, self.port))
        return self

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            path = head.split(b" ", 2)[1].decode().split("?", 1)[0]
            answer = self.routes.get(path, Answer(404, b"not here"))
            lines = [f"HTTP/1.1 {answer.status} X", f"Content-Length: {len(answer.body)}"]
            lines += [f"{k}: {v}" for k, v in answer.headers.items()]
            lines += ["Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode() + answer.body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
