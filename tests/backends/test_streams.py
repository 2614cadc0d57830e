"""A backend's stream through :class:`GuardedBackend`: every image checked, the deadline
per event, the breaker, and an early close reaching the backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from gateway.backends.base import GeneratedImage, ImageBackend, ImageEvent, ImageRequest
from gateway.backends.capabilities import Capabilities
from gateway.backends.local import render_png
from gateway.backends.resilience import BackendUnavailable, GuardedBackend
from gateway.config import ResilienceConfig
from gateway.errors import UpstreamError, UpstreamTimeout
from tests.support.backend_cases import image_request


class ScriptedBackend(ImageBackend):
    """Streams ``script``'s images (``None``: wait until released) and notes its close."""

    capabilities = Capabilities(stream=True)

    def __init__(self, script: list[bytes | None], **options: Any) -> None:
        super().__init__("scripted", options)
        self.script = script
        self.release = asyncio.Event()
        self.closed = asyncio.Event()

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        raise AssertionError("not called")

    async def stream(self, request: ImageRequest) -> AsyncGenerator[ImageEvent, None]:
        try:
            for index, data in enumerate(self.script):
                if data is None:
                    await self.release.wait()
                    continue
                yield ImageEvent(GeneratedImage(data), index)
        finally:
            self.closed.set()


def guarded(backend: ImageBackend, **settings: Any) -> GuardedBackend:
    return GuardedBackend(backend, ResilienceConfig(**settings))


async def test_a_malformed_image_ends_the_stream_and_counts_against_the_breaker() -> None:
    good = render_png("x", 1, 16, 16)
    backend = ScriptedBackend([good, good[:-20]])
    guard = guarded(backend, breaker_failures=1)

    events = guard.stream(image_request(stream=True))
    first = await anext(events)
    with pytest.raises(UpstreamError, match="malformed image"):
        await anext(events)
    assert first.image.media_type == "image/png"
    assert backend.closed.is_set()
    with pytest.raises(BackendUnavailable):
        await anext(guard.stream(image_request(stream=True)))


async def test_an_event_later_than_the_deadline_is_a_timeout() -> None:
    backend = ScriptedBackend([render_png("x", 1, 16, 16), None], timeout_seconds=0.2)
    events = guarded(backend).stream(image_request(stream=True))

    await anext(events)
    with pytest.raises(UpstreamTimeout):
        await anext(events)
    assert backend.closed.is_set()


async def test_closing_the_stream_closes_the_backends_call() -> None:
    backend = ScriptedBackend([render_png("x", 1, 16, 16), None])
    guard = guarded(backend, max_concurrency=1, max_queue=0)
    events = guard.stream(image_request(stream=True))

    await anext(events)
    await events.aclose()

    assert backend.closed.is_set()
    # The concurrency slot was given back: another stream gets it at once.
    backend.script = [render_png("y", 1, 16, 16)]
    again = guard.stream(image_request(stream=True))
    assert (await anext(again)).image.media_type == "image/png"
    await again.aclose()
