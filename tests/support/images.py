"""Small real images for tests, and the ways to spoil them.

PNGs are written by hand (zlib and struct); JPEG, WebP and GIF by Pillow.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import Image

__all__ = ["chunk", "encode", "noise_png", "pattern_png", "pixels", "png", "png_chunks", "rgba_png"]


def chunk(kind: bytes, data: bytes, *, crc: int | None = None) -> bytes:
    """One PNG chunk; ``crc`` overrides the right CRC-32."""
    if crc is None:
        crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_chunks(width: int, height: int) -> list[bytes]:
    """The chunks of an 8-bit RGB PNG of a flat colour: IHDR, IDAT, IEND."""
    rows = (b"\x00" + b"\x10\x80\xf0" * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return [chunk(b"IHDR", header), chunk(b"IDAT", zlib.compress(rows)), chunk(b"IEND", b"")]


def png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunks(width, height))


def encode(fmt: str, width: int, height: int, **options: object) -> bytes:
    """A real image in ``fmt`` (``JPEG``, ``WEBP``, ``GIF``, ``PNG``) made by Pillow."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 20)).save(out, fmt, **options)
    return out.getvalue()


def rgba_png(width: int, height: int, transparent: tuple[int, int, int, int] | None) -> bytes:
    """An RGBA PNG (a mask), opaque but for the ``transparent`` box (left, top, right,
    bottom)."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    if transparent is not None:
        image.paste((0, 0, 0, 0), transparent)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def pattern_png(width: int, height: int, shade: int = 0) -> bytes:
    """An RGB PNG with a diagonal gradient (its pixels differ, unlike :func:`png`'s)."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            ((x + shade) % 256, (y * 2) % 256, (x + y) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> tuple[tuple[int, int], list[tuple[int, int, int]]]:
    """An image's size and its RGB pixels, row by row (Pillow decodes it)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    raw = image.tobytes()
    return image.size, [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]  # type: ignore[misc]


def noise_png(width: int, height: int) -> bytes:
    """An RGB PNG of random pixels, stored uncompressed: about ``3 * width * height``
    bytes (for uploads over a size)."""
    rows = b"".join(b"\x00" + os.urandom(3 * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 0))
        + chunk(b"IEND", b"")
    )
