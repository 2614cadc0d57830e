"""Is the image that base64 text encodes an image? The checks of
:mod:`gateway.media.inspect`, reading the text a few bytes at a time where the format
allows it.

An image relayed as base64 (:mod:`gateway.http.relay`) is not kept decoded on the way:
its digits were all checked when it arrived (:mod:`gateway.backends.image_data`), and
a PNG's structure is found without holding its bytes: each chunk's length and type sit
in its first 8 bytes, so the walk decodes 12 characters at each chunk's start, and
decodes and CRC-checks every chunk but image data (IDAT) chunks over 64 KiB: the
header, palette and metadata chunks, small data chunks (libpng writes 8 KiB ones), the
end. What it cannot see is a corrupt byte inside a large data chunk, whose CRC would
cost 0.3 ms per MiB (zlib's ``crc32``), four times the rest of the image checks. JPEG,
WebP and GIF are decoded and checked in full (JPEG's scan data and GIF's sub-blocks
have to be read to be walked).
See BENCHMARKS.md, "Image relay".
"""

from __future__ import annotations

from gateway.backends import base64_codec
from gateway.backends.base import GeneratedImage
from gateway.media.inspect import (
    ImageInfo,
    MalformedImage,
    check_dimensions,
    inspect_image,
    png_walk,
)

__all__ = ["UNREAD_DATA_BYTES", "inspect_base64", "inspect_generated", "walked_in_place"]

#: Image data chunks longer than this are walked over, not decoded (their CRC unchecked).
UNREAD_DATA_BYTES = 64 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EQUALS = 0x3D


def walked_in_place(image: GeneratedImage) -> bool:
    """Whether :func:`inspect_generated` checks ``image`` without decoding it (a PNG held
    as base64): some microseconds, where a full check costs about 0.4 ms per MiB."""
    return image.raw is None and image.media_type == "image/png"


def inspect_generated(image: GeneratedImage) -> ImageInfo:
    """:func:`inspect_image` of ``image``'s bytes, or :func:`inspect_base64` of its
    base64 when it holds only that (nothing is decoded or kept that was not)."""
    raw = image.raw
    if raw is not None:
        return inspect_image(raw)
    return inspect_base64(memoryview(image.encoded()))


def inspect_base64(text: memoryview) -> ImageInfo:
    """The format and dimensions of the image that ``text`` encodes (base64 as encoders
    write it: digits, padded to a multiple of four).

    Raises:
        MalformedImage: as :func:`inspect_image`; also when ``text`` is not base64.
    """
    if not text or len(text) % 4:
        raise MalformedImage("not base64 as encoders write it")
    pads = (text[-1] == _EQUALS) + (text[-2] == _EQUALS)
    size = len(text) // 4 * 3 - pads

    def read(position: int, length: int) -> bytes:
        first = position // 3
        last = -(-(position + length) // 3)
        try:
            data = base64_codec.decode(text[first * 4 : last * 4])
        except base64_codec.Base64Error:
            raise MalformedImage("not base64 as encoders write it") from None
        offset = position - first * 3
        return data[offset : offset + length]

    if read(0, len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
        try:
            return inspect_image(base64_codec.decode(text))
        except base64_codec.Base64Error:
            raise MalformedImage("not base64 as encoders write it") from None
    return check_dimensions(png_walk(size, read, unread_data=UNREAD_DATA_BYTES))
