"""Is it an image? A walk over the container's structure, without decoding pixels.

:func:`inspect_image` reads a PNG, JPEG, WebP or GIF far enough to be sure that a
decoder will find a well-formed image of the dimensions it reports: every length field
fits in the data, the chunks or segments are where the format puts them, and PNG's
CRC-32 of every chunk matches. It does not decompress: a file that passes can still
hold corrupt pixel data, but never a signature followed by garbage, a truncated file,
or a header that lies about its size.

Cost: one pass over the bytes (PNG's CRC-32 in C, JPEG's scan data by a regular
expression): measured at 1.3 ms per MB of PNG and 2 ms per MB of JPEG, 10-20 us for a
256x256 PNG.

Anything that fails raises :class:`MalformedImage`, and nothing else: the tests feed
it arbitrary bytes.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_DIMENSION",
    "ImageInfo",
    "MalformedImage",
    "check_dimensions",
    "inspect_image",
    "png_walk",
]

#: The largest width or height accepted (WebP's own limit is 16383).
MAX_DIMENSION = 16384

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
#: Bit depths allowed for each PNG colour type.
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_MAX_CHUNK = 2**31 - 1
_PNG_CHUNK_HEAD = struct.Struct(">I4s")

#: JPEG start-of-frame markers: baseline, extended, progressive, lossless, arithmetic.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
#: The next marker after entropy-coded data: 0xFF not followed by a stuffed 0x00, a
#: restart marker (which belongs to the scan) or another 0xFF (fill).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

_WEBP_IMAGE = frozenset({b"VP8 ", b"VP8L"})


class MalformedImage(ValueError):
    """The bytes are not a well-formed PNG, JPEG, WebP or GIF; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What :func:`inspect_image` found."""

    #: ``png``, ``jpeg``, ``webp`` or ``gif``.
    format: str
    media_type: str
    width: int
    height: int
    #: PNG only: the image has an alpha channel (colour type 4 or 6, or a ``tRNS`` chunk).
    alpha: bool = False


def inspect_image(data: bytes | bytearray | memoryview) -> ImageInfo:
    """The format and dimensions of the image in ``data``.

    Raises:
        MalformedImage: ``data`` is not a well-formed image of a supported format, or
            its width or height is 0 or above :data:`MAX_DIMENSION`.
    """
    view = memoryview(data).cast("B")
    head = bytes(view[:12])
    if head.startswith(_PNG_SIGNATURE):
        info = _png(view)
    elif head.startswith(b"\xff\xd8"):
        info = _jpeg(view)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        info = _webp(view)
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        info = _gif(view)
    else:
        raise MalformedImage("not a PNG, JPEG, WebP or GIF")
    return check_dimensions(info)


def check_dimensions(info: ImageInfo) -> ImageInfo:
    """``info``, or :class:`MalformedImage` if a dimension is 0 or above the maximum."""
    if not (0 < info.width <= MAX_DIMENSION and 0 < info.height <= MAX_DIMENSION):
        raise MalformedImage(f"{info.format}: dimensions {info.width}x{info.height} out of range")
    return info


# -- PNG ---------------------------------------------------------------------------


def _png(view: memoryview) -> ImageInfo:
    return png_walk(len(view), lambda pos, length: view[pos : pos + length])


def png_walk(
    size: int, read: Callable[[int, int], bytes | memoryview], *, unread_data: int = 0
) -> ImageInfo:
    """The PNG checks over ``size`` bytes that ``read(position, length)`` gives.

    Image data chunks (IDAT) longer than ``unread_data`` bytes (if it is not 0) are not
    read, so their CRCs are not checked: for an image held as base64, whose chunks are
    found by decoding a few bytes at each one's start (:mod:`gateway.media.encoded`).
    """
    pos = len(_PNG_SIGNATURE)
    width = height = colour_type = -1
    seen_palette = seen_data = transparency = False
    while True:
        if pos + 12 > size:
            raise MalformedImage("png: truncated (no IEND chunk)")
        length, kind = _PNG_CHUNK_HEAD.unpack(read(pos, 8))
        end = pos + 12 + length
        if length > _PNG_MAX_CHUNK or end > size:
            raise MalformedImage(f"png: chunk {kind!r} runs past the end of the data")
        if not kind.isalpha() or not kind.isascii():
            raise MalformedImage("png: a chunk type is not four letters")
        if not unread_data or length <= unread_data or kind != b"IDAT":
            chunk = read(pos + 4, length + 8)  # type, data, CRC
            (crc,) = struct.unpack_from(">I", chunk, length + 4)
            if zlib.crc32(memoryview(chunk)[: length + 4]) != crc:
                raise MalformedImage(f"png: CRC mismatch in chunk {kind!r}")
        if width < 0:
            if kind != b"IHDR" or length != 13:
                raise MalformedImage("png: the first chunk is not a 13-byte IHDR")
            width, height, colour_type = _png_header(memoryview(chunk)[4:17])
        elif kind == b"IHDR":
            raise MalformedImage("png: a second IHDR chunk")
        elif kind == b"PLTE":
            seen_palette = True
        elif kind == b"tRNS":
            transparency = True
        elif kind == b"IDAT":
            if colour_type == 3 and not seen_palette:
                raise MalformedImage("png: palette image data before its PLTE chunk")
            seen_data = True
        elif kind == b"IEND":
            if length:
                raise MalformedImage("png: IEND chunk has data")
            if end != size:
                raise MalformedImage("png: data after the IEND chunk")
            break
        elif 65 <= kind[0] <= 90 and kind not in _PNG_CRITICAL:  # upper case: critical
            raise MalformedImage(f"png: unknown critical chunk {kind!r}")
        pos = end
    if not seen_data:
        raise MalformedImage("png: no IDAT chunk")
    alpha = transparency or colour_type in (4, 6)
    return ImageInfo("png", "image/png", width, height, alpha)


def _png_header(header: memoryview) -> tuple[int, int, int]:
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", header
    )
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise MalformedImage(f"png: bit depth {depth} with colour type {colour}")
    if compression or filtering or interlace > 1:
        raise MalformedImage("png: unknown compression, filter or interlace method")
    return width, height, colour


# -- JPEG --------------------------------------------------------------------------


def _jpeg(view: memoryview) -> ImageInfo:
    size = len(view)
    pos = 2
    width = height = 0
    scanned = False
    while True:
        # A marker: 0xFF, any number of 0xFF fill bytes, then the marker code.
        if pos >= size or view[pos] != 0xFF:
            raise MalformedImage("jpeg: truncated or missing a marker")
        while pos < size and view[pos] == 0xFF:
            pos += 1
        if pos >= size:
            raise MalformedImage("jpeg: truncated (no EOI marker)")
        marker = view[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            if not scanned:
                raise MalformedImage("jpeg: EOI before any scan")
            if pos != size:
                raise MalformedImage("jpeg: data after the EOI marker")
            return ImageInfo("jpeg", "image/jpeg", width, height)
        if marker == 0xD8 or marker == 0x00 or 0xD0 <= marker <= 0xD7:
            raise MalformedImage(f"jpeg: unexpected marker 0xFF{marker:02X}")
        if marker == 0x01:  # TEM: no length
            continue
        if pos + 2 > size:
            raise MalformedImage("jpeg: truncated segment")
        (length,) = struct.unpack_from(">H", view, pos)
        end = pos + length
        if length < 2 or end > size:
            raise MalformedImage(f"jpeg: segment 0xFF{marker:02X} runs past the end of the data")
        if marker in _JPEG_SOF:
            if width:
                raise MalformedImage("jpeg: a second frame header")
            if length < 8:
                raise MalformedImage("jpeg: frame header too short")
            height, width, components = struct.unpack_from(">HHB", view, pos + 3)
            if not components or length != 8 + 3 * components:
                raise MalformedImage("jpeg: frame header does not match its components")
            if not width or not height:
                raise MalformedImage("jpeg: frame header without dimensions")
        elif marker == 0xDA:  # SOS: a header, then entropy-coded data up to a marker
            if not width:
                raise MalformedImage("jpeg: scan before the frame header")
            found = _JPEG_MARKER.search(view, end)
            if found is None:
                raise MalformedImage("jpeg: truncated scan (no EOI marker)")
            scanned = True
            pos = found.start()
            continue
        pos = end


# -- WebP --------------------------------------------------------------------------


def _webp(view: memoryview) -> ImageInfo:
    size = len(view)
    (riff_size,) = struct.unpack_from("<I", view, 4)
    if riff_size + 8 != size:
        raise MalformedImage(f"webp: RIFF size {riff_size} but {size - 8} bytes follow")
    chunks: list[tuple[bytes, memoryview]] = []
    pos = 12
    while pos < size:
        if pos + 8 > size:
            raise MalformedImage("webp: truncated chunk header")
        kind = bytes(view[pos : pos + 4])
        (length,) = struct.unpack_from("<I", view, pos + 4)
        end = pos + 8 + length
        if end > size:
            raise MalformedImage(f"webp: chunk {kind!r} runs past the end of the data")
        chunks.append((kind, view[pos + 8 : end]))
        pos = end + (length & 1)  # chunks are padded to an even length
    if pos != size:
        raise MalformedImage("webp: the last chunk's padding is missing")
    if not chunks:
        raise MalformedImage("webp: no chunks")
    kind, body = chunks[0]
    if kind == b"VP8X":
        width, height = _webp_extended(body, {k for k, _ in chunks[1:]})
    elif kind in _WEBP_IMAGE:
        width, height = _webp_frame(kind, body)
    else:
        raise MalformedImage(f"webp: first chunk {kind!r} is not VP8, VP8L or VP8X")
    return ImageInfo("webp", "image/webp", width, height)


def _webp_frame(kind: bytes, body: memoryview) -> tuple[int, int]:
    if kind == b"VP8 ":
        if len(body) < 10:
            raise MalformedImage("webp: VP8 chunk too short")
        if body[0] & 1:
            raise MalformedImage("webp: VP8 data is not a key frame")
        if bytes(body[3:6]) != b"\x9d\x01\x2a":
            raise MalformedImage("webp: VP8 start code missing")
        width, height = struct.unpack_from("<HH", body, 6)
        return width & 0x3FFF, height & 0x3FFF
    if len(body) < 5 or body[0] != 0x2F:
        raise MalformedImage("webp: VP8L signature missing")
    (bits,) = struct.unpack_from("<I", body, 1)
    if bits >> 29:
        raise MalformedImage("webp: unknown VP8L version")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def _webp_extended(body: memoryview, later: set[bytes]) -> tuple[int, int]:
    if len(body) < 10:
        raise MalformedImage("webp: VP8X chunk too short")
    flags = body[0]
    width = int.from_bytes(body[4:7], "little") + 1
    height = int.from_bytes(body[7:10], "little") + 1
    if flags & 0x02:  # animation
        if b"ANIM" not in later or b"ANMF" not in later:
            raise MalformedImage("webp: animated without ANIM and ANMF chunks")
    elif not later & _WEBP_IMAGE:
        raise MalformedImage("webp: no VP8 or VP8L image chunk")
    return width, height


# -- GIF ---------------------------------------------------------------------------


def _gif(view: memoryview) -> ImageInfo:
    size = len(view)
    if size < 13:
        raise MalformedImage("gif: truncated header")
    width, height, packed = struct.unpack_from("<HHB", view, 6)
    pos = 13
    if packed & 0x80:
        pos += 3 << ((packed & 0x07) + 1)
    frames = 0
    while True:
        if pos >= size:
            raise MalformedImage("gif: truncated (no trailer)")
        block = view[pos]
        if block == 0x3B:  # trailer
            if pos + 1 != size:
                raise MalformedImage("gif: data after the trailer")
            break
        if block == 0x2C:  # image descriptor
            if pos + 11 > size:
                raise MalformedImage("gif: truncated image descriptor")
            frame_packed = view[pos + 9]
            pos += 10
            if frame_packed & 0x80:
                pos += 3 << ((frame_packed & 0x07) + 1)
            if pos >= size or not 2 <= view[pos] <= 12:
                raise MalformedImage("gif: bad LZW code size")
            pos = _gif_sub_blocks(view, pos + 1)
            frames += 1
        elif block == 0x21:  # extension: a label, then sub-blocks
            pos = _gif_sub_blocks(view, pos + 2)
        else:
            raise MalformedImage(f"gif: unknown block 0x{block:02X}")
    if not frames:
        raise MalformedImage("gif: no image")
    return ImageInfo("gif", "image/gif", width, height)


def _gif_sub_blocks(view: memoryview, pos: int) -> int:
    """The position after the sub-block chain starting at ``pos`` (its 0 terminator)."""
    size = len(view)
    while True:
        if pos >= size:
            raise MalformedImage("gif: truncated data sub-blocks")
        length = view[pos]
        pos += 1 + length
        if length == 0:
            return pos
