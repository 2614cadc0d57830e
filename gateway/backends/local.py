"""The built-in ``local`` backend: real PNG images, made here, with no network.

Deterministic: the same (prompt, seed, size, index) always gives the same picture —
a grid of colour tiles derived from a SHA-256 of them. Cheap: rows repeat within a
band of tiles, so each picture compresses fast; larger ones are encoded off the
event loop.

It streams: with ``partial_images`` P, each image comes first as P coarse versions of
itself (blocks of 2^P, ..., 2 tiles taking the colour of their first tile), then whole.
It accepts ``moderation`` (it moderates nothing) and an opaque ``background`` (its
pictures have no transparency); ``output_format`` is PNG only (other encoders would
need an imaging library).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from collections.abc import AsyncGenerator

from gateway.backends.base import GeneratedImage, ImageBackend, ImageEvent, ImageRequest
from gateway.backends.capabilities import Capabilities

__all__ = ["LocalBackend", "render_png"]

_GRID = 8
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Pictures with more pixels than this are encoded in a worker thread.
_INLINE_PIXELS = 256 * 256


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def render_png(
    prompt: str, seed: int | None, width: int, height: int, index: int = 0, block: int = 1
) -> bytes:
    """An RGB PNG of ``width`` x ``height``, a pure function of its arguments.

    ``block`` > 1 makes a coarse version: each ``block`` x ``block`` square of tiles takes
    the colour of its first tile.
    """
    digest = hashlib.sha256(f"{seed}\x00{width}x{height}\x00{index}\x00{prompt}".encode()).digest()
    palette = [digest[i : i + 3] for i in range(0, 30, 3)]
    # Tile (row, col) takes a palette colour chosen by more hash bytes.
    choice = hashlib.sha256(digest).digest() + hashlib.sha256(digest[::-1]).digest()
    tile_w = -(-width // _GRID)
    tile_h = -(-height // _GRID)
    compressor = zlib.compressobj(level=1)
    parts = []
    for band in range(_GRID):
        rows = min(tile_h, height - band * tile_h)
        if rows <= 0:
            break
        first_band = band - band % block
        row = b"\x00" + b"".join(
            palette[choice[first_band * _GRID + col - col % block] % len(palette)]
            * min(tile_w, width - col * tile_w)
            for col in range(_GRID)
            if col * tile_w < width
        )
        parts.append(compressor.compress(row * rows))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


class LocalBackend(ImageBackend):
    """Options: ``sizes`` (list of ``"WIDTHxHEIGHT"``), ``timeout_seconds``."""

    default_sizes = (
        "256x256",
        "512x512",
        "1024x1024",
        "1024x1536",
        "1536x1024",
        "1792x1024",
        "1024x1792",
    )

    capabilities = Capabilities(
        background=("auto", "opaque"), moderation=("auto", "low"), stream=True
    )

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        def render_all() -> list[GeneratedImage]:
            return [
                GeneratedImage(
                    render_png(request.prompt, request.seed, request.width, request.height, i)
                )
                for i in range(request.n)
            ]

        if request.width * request.height <= _INLINE_PIXELS:
            return render_all()
        return await asyncio.to_thread(render_all)

    async def stream(self, request: ImageRequest) -> AsyncGenerator[ImageEvent, None]:
        partials = request.partial_images
        inline = request.width * request.height <= _INLINE_PIXELS
        for index in range(request.n):
            for level in range(partials + 1):
                block = 2 ** (partials - level)
                args = (request.prompt, request.seed, request.width, request.height, index, block)
                data = render_png(*args) if inline else await asyncio.to_thread(render_png, *args)
                yield ImageEvent(GeneratedImage(data), index, level if level < partials else None)
