"""Streamed images on both sides: what a fake upstream sends (OpenAI's Server-Sent
Events), what a test reads back, and images in other formats (Pillow, a dev tool)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable
from typing import Any

from aiohttp import ClientResponse, web
from PIL import Image

__all__ = ["convert", "read_events", "send_image_events"]


def convert(png: bytes, output_format: str | None, quality: int | None = None) -> bytes:
    """``png`` re-encoded as ``output_format`` (``jpeg``, ``webp``; else as it is)."""
    if output_format not in ("jpeg", "webp"):
        return png
    out = io.BytesIO()
    options = {"quality": quality} if quality is not None else {}
    Image.open(io.BytesIO(png)).convert("RGB").save(out, output_format.upper(), **options)
    return out.getvalue()


async def send_image_events(
    request: web.Request,
    body: dict[str, Any],
    *,
    render: Callable[[int, int], bytes],
    hang_after_first: asyncio.Event | None = None,
    closed: asyncio.Event | None = None,
    partials_only: bool = False,
    kind: str = "image_generation",
) -> web.StreamResponse:
    """Answer ``body`` (a streamed generation, or ``kind`` ``image_edit``: an edit's
    form, its values as JSON would have them) as OpenAI does: for each image
    ``partial_images`` partial events (coarse versions), then the completed one.
    ``render(index, block)`` makes image ``index`` as a PNG, coarse for ``block`` > 1.

    ``hang_after_first``: after the first completed image, wait until it is set.
    ``closed`` is set if the client goes away meanwhile (the server must cancel
    handlers of lost connections: ``handler_cancellation=True``). ``partials_only``:
    the stream ends after the first image's partial images.
    """
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    partials = body.get("partial_images") or 0
    common = {
        "created_at": 1700000000,
        "size": body["size"],
        "quality": body.get("quality", "auto"),
        "background": body.get("background", "auto"),
        "output_format": body.get("output_format", "png"),
    }
    fmt, compression = body.get("output_format"), body.get("output_compression")
    try:
        for index in range(body.get("n", 1)):
            for level in range(partials):
                block = 2 ** (partials - level)
                image = render(index, block)
                event = {
                    "type": f"{kind}.partial_image",
                    "b64_json": base64.b64encode(convert(image, fmt, compression)).decode(),
                    "partial_image_index": level,
                    **common,
                }
                await _send(response, event)
            if partials_only:
                break
            image = render(index, 1)
            usage = {
                "total_tokens": 100,
                "input_tokens": 50,
                "output_tokens": 50,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            }
            event = {
                "type": f"{kind}.completed",
                "b64_json": base64.b64encode(convert(image, fmt, compression)).decode(),
                "usage": usage,
                **common,
            }
            await _send(response, event)
            if index == 0 and hang_after_first is not None:
                await hang_after_first.wait()
    except (asyncio.CancelledError, ConnectionError):
        if closed is not None:
            closed.set()
        raise
    await response.write_eof()
    return response


async def _send(response: web.StreamResponse, event: dict[str, Any]) -> None:
    data = json.dumps(event)
    await response.write(f"event: {event['type']}\ndata: {data}\n\n".encode())


async def read_events(response: ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """Every ``(event, data)`` of a Server-Sent Events answer, read to its end."""
    text = (await response.read()).decode()
    events = []
    for block in text.split("\n\n"):
        name, data = "", []
        for line in block.splitlines():
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events
