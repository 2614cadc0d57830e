"""A local SMTP sink (aiosmtpd) that keeps every message it is sent."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["SmtpSink", "smtp_sink"]


@dataclass
class SmtpSink:
    port: int
    #: (envelope recipients, the parsed message), in the order they came.
    messages: list[tuple[list[str], email.message.EmailMessage]] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    # aiosmtpd's hook: called with each message the server accepts.
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        self.received.set()
        return "250 OK"


@asynccontextmanager
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    """An SMTP server on a free port of 127.0.0.1, in this event loop."""
    loop = asyncio.get_running_loop()
    sink = SmtpSink(port=0)

    def protocol() -> Any:
        return SMTP(sink, hostname="sink.test", loop=loop)

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()
