"""The flat-block JPEG encoder: what it writes is a JPEG that decoders read back."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.media.inspect import inspect_image
from gateway.media.jpeg import encode_flat_blocks


def checker(x: int, y: int) -> bytes:
    """Blocks alternating between two colours, and black and white ones: every DC
    difference size, and entropy bytes of 0xFF (stuffed)."""
    choice = (x // 8 + y // 8) % 4
    return (b"\xff\xff\xff", b"\x00\x00\x00", b"\xf0\x10\x80", b"\x20\xc0\x40")[choice]


@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 9), (8, 8), (100, 60), (257, 130)])
@pytest.mark.parametrize("quality", [1, 50, 100])
def test_decoders_read_it_back(width: int, height: int, quality: int) -> None:
    data = encode_flat_blocks(width, height, checker, quality)

    info = inspect_image(data)
    assert (info.format, info.width, info.height) == ("jpeg", width, height)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.format, image.size, image.mode) == ("JPEG", (width, height), "RGB")
    if quality == 100:  # at full quality each block is its colour, give or take rounding
        for x in range(0, width, 8):
            for y in range(0, height, 8):
                got = image.getpixel((x, y))
                assert max(abs(a - b) for a, b in zip(got, checker(x, y), strict=True)) <= 3


def test_lower_quality_is_smaller() -> None:
    sizes = [len(encode_flat_blocks(256, 256, checker, q)) for q in (100, 50, 5)]
    assert sizes[0] > sizes[1] > sizes[2]
