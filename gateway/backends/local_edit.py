"""The ``local`` backend's edits and variations: deterministic, and visibly the input's.

* An **edit** keeps the first input image where the mask is opaque and paints the
  prompt's picture (:func:`~gateway.backends.local.render_png`'s tiles, seeded by the
  inputs too) where it is transparent; without a mask, the prompt's picture shows
  through every other tile of the image.
* A **variation** is the input with its colour channels rotated (one rotation per
  index) over a faint grid of the picture's own tiles.

Pixels are read from PNGs (8 bits per channel, not interlaced) by a small decoder here
(the gateway has no imaging library); any other input (JPEG, WebP, 16-bit PNG) is
stood in for by tiles derived from its bytes, so the answer still depends on it. Both
scale to the requested size by nearest neighbour. Pure Python: fine for a development
backend, and run in a worker thread past a small size.

The result is written in the request's ``output_format``: a PNG (``output_compression``
sets zlib's level, as for generations), a JPEG of flat 8x8 blocks (each the colour of its
first pixel; ``output_compression`` its quality) or a lossless WebP (rows of colour
runs). A partial image of a streamed edit is the result in coarse square blocks, each
the colour of its first pixel (:func:`edit_image`'s ``block``).
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Sequence

from gateway.backends.base import EDIT, GeneratedImage, ImageRequest, InputImage
from gateway.media.jpeg import encode_flat_blocks
from gateway.media.webp import Band, encode_bands

__all__ = ["decode_png_rgba", "edit_image", "jpeg_quality", "png_level"]

#: The side, in pixels, of a partial image's blocks per ``block`` (:func:`edit_image`).
_PARTIAL_BLOCK_PIXELS = 8

#: Inputs with more pixels than this are not decoded (stood in for, as a JPEG is).
_MAX_DECODED_PIXELS = 2048 * 2048
_TRANSPARENT = re.compile(rb"\x00+")
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def decode_png_rgba(data: bytes) -> tuple[int, int, list[bytes]] | None:
    """``(width, height, rows)`` of RGBA bytes, or ``None`` for a PNG this cannot read
    (16-bit, sub-byte, interlaced, too large). ``data`` was checked as a PNG already."""
    pos = 8
    idat: list[bytes] = []
    palette = b""
    alpha_table = b""
    width = height = depth = colour = interlace = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            alpha_table = body
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    if depth != 8 or interlace or colour not in _CHANNELS or width * height > _MAX_DECODED_PIXELS:
        return None
    channels = _CHANNELS[colour]
    stride = width * channels
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error:
        return None
    if len(raw) < (stride + 1) * height:
        return None
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(
            raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, channels
        )
        if line is None:
            return None
        rows.append(_to_rgba(bytes(line), colour, palette, alpha_table))
        previous = line
    return width, height, rows


def _unfilter(kind: int, line: bytearray, prior: bytearray, bpp: int) -> bytearray | None:
    if kind == 0:
        return line
    if kind == 2:
        return bytearray((a + b) & 0xFF for a, b in zip(line, prior, strict=True))
    n = len(line)
    for i in range(n):
        left = line[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
        elif kind == 4:
            corner = prior[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + pred) & 0xFF
        else:
            return None
    return line


def _to_rgba(line: bytes, colour: int, palette: bytes, alpha_table: bytes) -> bytes:
    if colour == 6:
        return line
    out = bytearray(len(line) // _CHANNELS[colour] * 4)
    if colour == 2:
        out[0::4], out[1::4], out[2::4] = line[0::3], line[1::3], line[2::3]
        out[3::4] = b"\xff" * (len(line) // 3)
    elif colour == 0:
        out[0::4] = out[1::4] = out[2::4] = line
        out[3::4] = b"\xff" * len(line)
    elif colour == 4:
        out[0::4] = out[1::4] = out[2::4] = line[0::2]
        out[3::4] = line[1::2]
    else:  # palette
        for i, index in enumerate(line):
            rgb = palette[3 * index : 3 * index + 3] or b"\x00\x00\x00"
            out[4 * i : 4 * i + 3] = rgb
            out[4 * i + 3] = alpha_table[index] if index < len(alpha_table) else 255
    return bytes(out)


def _tiles(seed: bytes, width: int, height: int) -> list[bytes]:
    """RGBA rows of an 8x8 grid of colour tiles chosen by ``seed``."""
    digest = hashlib.sha256(seed).digest()
    palette = [digest[i : i + 3] + b"\xff" for i in range(0, 30, 3)]
    choice = hashlib.sha256(digest).digest() * 2
    tile_w, tile_h = -(-width // 8), -(-height // 8)
    bands = []
    for band in range(8):
        row = b"".join(palette[choice[band * 8 + col] % 10] * tile_w for col in range(8))
        bands.append(row[: width * 4])
    return [bands[min(y // tile_h, 7)] for y in range(height)]


def _rgba_of(image: InputImage, width: int, height: int) -> list[bytes]:
    """The image's RGBA rows at ``width`` x ``height`` (nearest neighbour)."""
    decoded = decode_png_rgba(image.data) if image.media_type == "image/png" else None
    if decoded is None:
        return _tiles(b"input\x00" + hashlib.sha256(image.data).digest(), width, height)
    source_w, source_h, rows = decoded
    if (source_w, source_h) == (width, height):
        return rows
    columns = [x * source_w // width for x in range(width)]
    scaled: list[bytes] = []
    for y in range(height):
        row = rows[y * source_h // height]
        scaled.append(b"".join(row[4 * c : 4 * c + 4] for c in columns))
    return scaled


def png_level(compression: int | None) -> int:
    """zlib's level for ``output_compression`` (100, or none: the fastest; 0: the hardest)."""
    return 1 if compression is None else max(1, round((100 - compression) * 9 / 100))


def jpeg_quality(compression: int | None) -> int:
    """A JPEG's quality (1-100) for ``output_compression`` (none: 100)."""
    return 100 if compression is None else max(1, compression)


def edit_image(request: ImageRequest, index: int, block: int = 1) -> GeneratedImage:
    """Image ``index`` of an edit or a variation ``request``, in its ``output_format``;
    ``block`` > 1 makes a coarse version of it (a streamed edit's partial image): squares
    of ``8 * block`` pixels, each the colour of its first pixel."""
    width, height = request.width, request.height
    rows = _edited_rows(request, index)
    if block > 1:
        rows = _coarse(rows, width, _PARTIAL_BLOCK_PIXELS * block)
    compression = request.output_compression
    if request.output_format == "jpeg":
        quality = jpeg_quality(compression)
        jpeg = encode_flat_blocks(width, height, lambda x, y: rows[y][4 * x : 4 * x + 3], quality)
        return GeneratedImage(jpeg, "image/jpeg")
    if request.output_format == "webp":
        return GeneratedImage(encode_bands(width, height, _bands(rows, width)), "image/webp")
    return GeneratedImage(_png_rgb(width, height, rows, png_level(compression)))


def _edited_rows(request: ImageRequest, index: int) -> list[bytes]:
    """The RGBA rows of image ``index`` of an edit or a variation ``request``."""
    width, height = request.width, request.height
    first = request.images[0]
    base = _rgba_of(first, width, height)
    inputs = hashlib.sha256()
    for image in request.images:
        inputs.update(hashlib.sha256(image.data).digest())
    seed = f"{request.seed}\x00{index}\x00{request.prompt}\x00".encode() + inputs.digest()
    paint = _tiles(seed, width, height)
    if request.operation == EDIT:
        if request.mask is not None:
            return _masked(base, paint, _rgba_of(request.mask, width, height))
        return [p if (y // 8) % 2 else b for y, (b, p) in enumerate(zip(base, paint, strict=True))]
    return _varied(base, paint, index)


def _coarse(rows: Sequence[bytes], width: int, side: int) -> list[bytes]:
    """``rows`` in squares of ``side`` pixels, each the colour of its top left pixel."""
    coarse: list[bytes] = []
    for top in range(0, len(rows), side):
        source = rows[top]
        row = b"".join(
            source[4 * x : 4 * x + 4] * min(side, width - x) for x in range(0, width, side)
        )
        coarse += [row] * min(side, len(rows) - top)
    return coarse


def _bands(rows: Sequence[bytes], width: int) -> list[Band]:
    """``rows`` as :func:`~gateway.media.webp.encode_bands` draws them: runs of equal
    rows, each row runs of one colour."""
    bands: list[Band] = []
    previous: bytes | None = None
    for row in rows:
        if row == previous:
            count, same = bands[-1]
            bands[-1] = (count + 1, same)
            continue
        runs: list[tuple[bytes, int]] = []
        x = 0
        while x < width:
            pixel = row[4 * x : 4 * x + 4]
            end = x + 1
            while end < width and row[4 * end : 4 * end + 4] == pixel:
                end += 1
            runs.append((pixel[:3], end - x))
            x = end
        bands.append((1, runs))
        previous = row
    return bands


def _masked(base: Sequence[bytes], paint: Sequence[bytes], mask: Sequence[bytes]) -> list[bytes]:
    rows = []
    for row, painted, mask_row in zip(base, paint, mask, strict=True):
        out = bytearray(row)
        for run in _TRANSPARENT.finditer(mask_row[3::4]):
            start, end = 4 * run.start(), 4 * run.end()
            out[start:end] = painted[start:end]
        rows.append(bytes(out))
    return rows


def _varied(base: Sequence[bytes], paint: Sequence[bytes], index: int) -> list[bytes]:
    shift = 1 + index % 2
    rows = []
    for y, (row, painted) in enumerate(zip(base, paint, strict=True)):
        out = bytearray(row)
        channels = [row[0::4], row[1::4], row[2::4]]
        out[0::4], out[1::4], out[2::4] = channels[shift:] + channels[:shift]
        if y % 16 == 0:  # a faint grid line of the picture's tiles
            out = bytearray(painted)
        rows.append(bytes(out))
    return rows


def _png_rgb(width: int, height: int, rows: Sequence[bytes], level: int = 1) -> bytes:
    raw = bytearray()
    for row in rows:
        rgb = bytearray(width * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = row[0::4], row[1::4], row[2::4]
        raw += b"\x00" + rgb
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), level))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
