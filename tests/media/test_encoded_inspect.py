"""The image checks on base64 text agree with the checks on the bytes it encodes.

:func:`inspect_base64` walks a PNG held as base64 by decoding a few bytes per chunk;
it must reach the same verdict as :func:`inspect_image` on the decoded bytes, except
for a CRC inside an image data chunk over 64 KiB, which it does not read (by design:
see :mod:`gateway.media.encoded`).
"""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from gateway.media.encoded import UNREAD_DATA_BYTES, inspect_base64
from gateway.media.inspect import MalformedImage, inspect_image
from tests.support.images import chunk, encode, png, png_chunks

IHDR, IDAT, IEND = png_chunks(64, 64)
SIGNATURE = b"\x89PNG\r\n\x1a\n"
BIG_DATA = zlib.compress(bytes(range(256)) * 1024, 0)  # an IDAT payload over 64 KiB


def verdict(check: object, data: object) -> object:
    try:
        return check(data)  # type: ignore[operator]
    except MalformedImage:
        return "malformed"


CASES = {
    "png": png(64, 48),
    "png-big-idat": SIGNATURE + IHDR + chunk(b"IDAT", BIG_DATA) + IEND,
    "png-many-idats": SIGNATURE
    + IHDR
    + chunk(b"IDAT", IDAT[8:20])
    + chunk(b"IDAT", IDAT[20:-4])
    + IEND,
    "png-bad-small-idat-crc": SIGNATURE + IHDR + chunk(b"IDAT", IDAT[8:-4], crc=0) + IEND,
    "png-bad-ihdr-crc": SIGNATURE + chunk(b"IHDR", IHDR[8:-4], crc=1) + IDAT + IEND,
    "png-truncated": png(64, 64)[:-20],
    "png-big-idat-truncated": SIGNATURE + IHDR + chunk(b"IDAT", BIG_DATA)[:-100] + IEND,
    "png-data-after-iend": png(64, 64) + b"xx",
    "png-no-idat": SIGNATURE + IHDR + IEND,
    "png-signature-then-garbage": SIGNATURE + b"garbage" * 40,
    "png-huge-dimensions": SIGNATURE
    + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 10, 8, 2, 0, 0, 0))
    + IDAT
    + IEND,
    "jpeg": encode("JPEG", 64, 48),
    "jpeg-truncated": encode("JPEG", 64, 48)[:-30],
    "webp": encode("WEBP", 64, 48),
    "gif": encode("GIF", 64, 48),
    "not-an-image": b"<html>an error page</html>",
}


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_the_verdict_on_base64_is_the_verdict_on_the_bytes(data: bytes) -> None:
    text = memoryview(base64.b64encode(data))

    assert verdict(inspect_base64, text) == verdict(inspect_image, data)


def test_a_crc_inside_a_large_image_data_chunk_is_not_read() -> None:
    assert len(BIG_DATA) > UNREAD_DATA_BYTES
    spoiled = SIGNATURE + IHDR + chunk(b"IDAT", BIG_DATA, crc=0) + IEND

    assert verdict(inspect_image, spoiled) == "malformed"
    assert inspect_base64(memoryview(base64.b64encode(spoiled))).format == "png"


@pytest.mark.parametrize("text", [b"", b"abc", b"A" * 7, b"!!!!" * 8])
def test_text_that_is_not_base64_is_malformed(text: bytes) -> None:
    with pytest.raises(MalformedImage):
        inspect_base64(memoryview(text))
