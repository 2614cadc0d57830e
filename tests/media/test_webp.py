"""The lossless WebP encoder: decoders read back exactly the pixels it was given."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.media.inspect import inspect_image
from gateway.media.webp import Band, encode_bands

RED, GREEN, BLUE, GREY = b"\xff\x00\x00", b"\x00\xff\x00", b"\x00\x00\xff", b"\x80\x80\x80"


def pixels(width: int, bands: list[Band]) -> bytes:
    rows = []
    for count, runs in bands:
        row = b"".join(rgb * length for rgb, length in runs)
        assert len(row) == 3 * width
        rows.append(row * count)
    return b"".join(rows)


CASES = {
    "one pixel": (1, [(1, [(GREY, 1)])]),
    "one colour": (5, [(4, [(RED, 5)])]),
    "two colours a row": (9, [(3, [(RED, 4), (BLUE, 5)])]),
    "many colours": (
        12,
        [
            (2, [(bytes([i * 20, 255 - i * 20, i * 7]), 1) for i in range(12)]),
            (5, [(GREEN, 6), (GREY, 6)]),
        ],
    ),
    "copies longer than 4096": (3000, [(7, [(RED, 1000), (BLUE, 2000)])]),
}


@pytest.mark.parametrize("case", CASES)
def test_decoders_read_back_the_same_pixels(case: str) -> None:
    width, bands = CASES[case]
    height = sum(count for count, _ in bands)

    data = encode_bands(width, height, bands)

    info = inspect_image(data)
    assert (info.format, info.width, info.height) == ("webp", width, height)
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    assert image.size == (width, height)
    assert image.convert("RGB").tobytes() == pixels(width, bands)
