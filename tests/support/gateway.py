"""In-process gateways (``make_gateway``'s) and the API keys tests issue (``make_key``'s)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.services import SERVICES, Services

__all__ = ["Gateway", "IssuedKey", "MakeGateway", "MakeKey"]


@dataclass
class Gateway:
    """A running gateway app and a client for it."""

    client: TestClient[web.Request, web.Application]

    @property
    def services(self) -> Services:
        return self.client.app[SERVICES]  # type: ignore[index]

    async def generate(self, key: str | None, **body: Any) -> Any:
        body.setdefault("prompt", "a lighthouse at dawn")
        body.setdefault("size", "256x256")
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return await self.client.post("/v1/images/generations", json=body, headers=headers)

    async def flush(self) -> None:
        await self.services.flusher.flush()


MakeGateway = Callable[..., Awaitable[Gateway]]


@dataclass
class IssuedKey:
    key: str
    key_id: uuid.UUID
    user_id: uuid.UUID


MakeKey = Callable[..., Awaitable[IssuedKey]]
