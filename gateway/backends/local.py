"""The built-in ``local`` backend: real PNG, JPEG or WebP images, made here, no network.

Deterministic: the same (prompt, seed, size, index) always gives the same picture —
a grid of colour tiles derived from a SHA-256 of them. Cheap: rows repeat within a
band of tiles, so each picture compresses fast; larger ones are encoded off the
event loop. Edits and variations are made from the input image and mask
(:mod:`gateway.backends.local_edit`).

It streams generations and edits: with ``partial_images`` P, each image comes first as P
coarse versions of itself (blocks of 2^P, ..., 2 tiles taking the colour of their first
tile; an edit's blocks are 8 times as many pixels), then whole. It accepts
``moderation`` (it moderates nothing) and an opaque ``background`` (its pictures have no
transparency); ``output_format`` PNG, JPEG (a baseline JPEG of flat blocks,
:mod:`gateway.media.jpeg`) or WebP (lossless, :mod:`gateway.media.webp`), and
``output_compression`` (JPEG's quality; for PNG, 100 is zlib's fastest level, 0 its
hardest; a lossless WebP is the same at any level).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from collections.abc import AsyncGenerator

from gateway.backends.base import (
    EDIT,
    GENERATE,
    VARIATION,
    GeneratedImage,
    ImageBackend,
    ImageEvent,
    ImageRequest,
)
from gateway.backends.capabilities import Capabilities
from gateway.backends.local_edit import edit_image, jpeg_quality, png_level
from gateway.media.jpeg import encode_flat_blocks
from gateway.media.webp import encode_bands

__all__ = ["LocalBackend", "render", "render_jpeg", "render_png", "render_webp"]

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


def _tiles(
    prompt: str, seed: int | None, width: int, height: int, index: int, block: int
) -> tuple[int, int, list[list[bytes]]]:
    """``(tile width, tile height, colours)``: the picture's tile grid, ``colours[band]
    [col]`` an RGB triple; ``block`` > 1 gives each ``block`` x ``block`` square of tiles
    the colour of its first tile."""
    digest = hashlib.sha256(f"{seed}\x00{width}x{height}\x00{index}\x00{prompt}".encode()).digest()
    palette = [digest[i : i + 3] for i in range(0, 30, 3)]
    # Tile (row, col) takes a palette colour chosen by more hash bytes.
    choice = hashlib.sha256(digest).digest() + hashlib.sha256(digest[::-1]).digest()
    colours = [
        [
            palette[choice[(band - band % block) * _GRID + col - col % block] % len(palette)]
            for col in range(_GRID)
        ]
        for band in range(_GRID)
    ]
    return -(-width // _GRID), -(-height // _GRID), colours


def render_png(
    prompt: str,
    seed: int | None,
    width: int,
    height: int,
    index: int = 0,
    block: int = 1,
    *,
    level: int = 1,
) -> bytes:
    """An RGB PNG of ``width`` x ``height``, a pure function of its arguments.

    ``block`` > 1 makes a coarse version: each ``block`` x ``block`` square of tiles takes
    the colour of its first tile. ``level``: zlib's compression level.
    """
    tile_w, tile_h, colours = _tiles(prompt, seed, width, height, index, block)
    compressor = zlib.compressobj(level=level)
    parts = []
    for band in range(_GRID):
        rows = min(tile_h, height - band * tile_h)
        if rows <= 0:
            break
        row = b"\x00" + b"".join(
            colours[band][col] * min(tile_w, width - col * tile_w)
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


def render_jpeg(
    prompt: str,
    seed: int | None,
    width: int,
    height: int,
    index: int = 0,
    block: int = 1,
    *,
    quality: int = 100,
) -> bytes:
    """The picture of :func:`render_png` as a baseline JPEG (``quality`` 1-100); where a
    tile edge crosses an 8x8 block, the block takes the colour of its first pixel."""
    tile_w, tile_h, colours = _tiles(prompt, seed, width, height, index, block)
    return encode_flat_blocks(
        width, height, lambda x, y: colours[y // tile_h][x // tile_w], quality
    )


def render_webp(
    prompt: str, seed: int | None, width: int, height: int, index: int = 0, block: int = 1
) -> bytes:
    """The picture of :func:`render_png` as a lossless WebP (the same pixels)."""
    tile_w, tile_h, colours = _tiles(prompt, seed, width, height, index, block)
    bands = [
        (
            min(tile_h, height - band * tile_h),
            [
                (colours[band][col], min(tile_w, width - col * tile_w))
                for col in range(_GRID)
                if col * tile_w < width
            ],
        )
        for band in range(_GRID)
        if band * tile_h < height
    ]
    return encode_bands(width, height, bands)


def render(request: ImageRequest, index: int, block: int = 1) -> GeneratedImage:
    """Image ``index`` of ``request`` in its ``output_format`` (``output_compression``:
    JPEG's quality, or for PNG how hard zlib works: 100, the default, least); an edit or
    a variation is made from its input (:func:`~gateway.backends.local_edit.edit_image`)."""
    if request.images:
        return edit_image(request, index, block)
    args = (request.prompt, request.seed, request.width, request.height, index, block)
    compression = request.output_compression
    if request.output_format == "jpeg":
        return GeneratedImage(render_jpeg(*args, quality=jpeg_quality(compression)), "image/jpeg")
    if request.output_format == "webp":  # lossless: output_compression changes nothing
        return GeneratedImage(render_webp(*args), "image/webp")
    return GeneratedImage(render_png(*args, level=png_level(compression)))


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
    operations = frozenset({GENERATE, EDIT, VARIATION})

    capabilities = Capabilities(
        background=("auto", "opaque"),
        output_format=("png", "jpeg", "webp"),
        output_compression=True,
        moderation=("auto", "low"),
        stream=True,
    )

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        def render_all() -> list[GeneratedImage]:
            return [render(request, i) for i in range(request.n)]

        if request.width * request.height <= _INLINE_PIXELS and not request.images:
            return render_all()
        return await asyncio.to_thread(render_all)

    async def stream(self, request: ImageRequest) -> AsyncGenerator[ImageEvent, None]:
        partials = request.partial_images
        inline = request.width * request.height <= _INLINE_PIXELS and not request.images
        for index in range(request.n):
            for level in range(partials + 1):
                block = 2 ** (partials - level)
                if inline:
                    image = render(request, index, block)
                else:
                    image = await asyncio.to_thread(render, request, index, block)
                yield ImageEvent(image, index, level if level < partials else None)
