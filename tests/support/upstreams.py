"""A fake upstream that speaks the gateway's own (OpenAI Images) wire format."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.backends.local import render_png
from tests.support.streams import convert, send_image_events

__all__ = ["FakeUpstream", "serve_fake_upstream", "serve_images_endpoint", "upstream_config"]


@dataclass
class FakeUpstream:
    """An aiohttp server answering ``POST /v1/images/generations``.

    ``mode``: ``ok`` (n images), ``short`` (n - 1 images), ``fail`` (HTTP 500),
    ``garbage`` (200 with a non-JSON body), ``hang`` (waits until ``release`` is set),
    ``reset`` (drops the connection without answering).

    ``stream: true`` is answered with OpenAI's events (:mod:`tests.support.streams`);
    in mode ``stream_hang`` the stream stops after the first image until ``release``
    is set, and ``stream_closed`` is set if the gateway leaves meanwhile (the server
    of :func:`serve_fake_upstream` cancels handlers of lost connections).
    Mode ``stream_partials_only``: the stream ends after the first image's partials.
    ``output_format`` jpeg or webp re-encodes the images.
    """

    mode: str = "ok"
    #: Answer the next ``fail_first`` requests with ``fail_status`` (and ``Retry-After``).
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.fail_first > 0:
            self.fail_first -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response(
                {"error": {"message": "busy"}}, status=self.fail_status, headers=headers
            )
        if self.mode == "fail":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if self.mode == "reset":
            assert request.transport is not None
            request.transport.abort()  # the connection dies with no answer
            return web.Response()
        if self.mode == "garbage":
            return web.Response(text="<html>oops</html>")
        if self.mode == "hang":
            await self.release.wait()
        n = body["n"] - (1 if self.mode == "short" else 0)
        width, height = (int(v) for v in body["size"].split("x"))
        fmt, quality = body.get("output_format"), body.get("output_compression")
        if body.get("stream"):
            return await send_image_events(
                request,
                body,
                render=lambda i, block: convert(
                    render_png(body["prompt"], i, width, height, 0, block), fmt, quality
                ),
                hang_after_first=self.release if self.mode == "stream_hang" else None,
                closed=self.stream_closed,
                partials_only=self.mode == "stream_partials_only",
            )
        data = [
            {
                "b64_json": base64.b64encode(
                    convert(render_png(body["prompt"], i, width, height), fmt, quality)
                ).decode()
            }
            for i in range(n)
        ]
        return web.json_response({"created": 0, "data": data})


@contextlib.asynccontextmanager
async def serve_images_endpoint(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *,
    handler_cancellation: bool = False,
) -> AsyncIterator[str]:
    """A server answering ``POST /v1/images/generations`` with ``handler``; its base URL.

    ``handler_cancellation``: a handler whose client leaves is cancelled."""
    app = web.Application()
    app.router.add_post("/v1/images/generations", handler)
    server = TestServer(app, handler_cancellation=handler_cancellation)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/v1"
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def serve_fake_upstream(*, handler_cancellation: bool = False) -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    try:
        async with serve_images_endpoint(
            upstream.handle, handler_cancellation=handler_cancellation
        ) as url:
            upstream.url = url
            yield upstream
    finally:
        upstream.release.set()


def upstream_config(
    upstream: FakeUpstream, timeout: float = 10.0, **resilience: Any
) -> dict[str, Any]:
    """Config for a backend ``remote`` (and a model of that name) calling ``upstream``."""
    return {
        "backends": {
            "remote": {
                "type": "http",
                "base_url": upstream.url,
                "timeout_seconds": timeout,
                "retry_backoff_seconds": 0.01,
                **resilience,
            }
        },
        "models": {"remote": "remote"},
    }
