"""The local backend reads PNG pixels itself: the same as Pillow, whatever the filters."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.backends.local_edit import decode_png_rgba


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P"])
def test_decoded_pixels_are_pillows(mode: str) -> None:
    image = Image.new("RGB", (37, 23))
    image.putdata(
        [(x * 7 % 256, y * 11 % 256, (x * y) % 256) for y in range(23) for x in range(37)]
    )
    image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, "PNG")  # Pillow picks a filter per row: sub, up, average, paeth

    decoded = decode_png_rgba(out.getvalue())

    assert decoded is not None
    width, height, rows = decoded
    assert (width, height) == (37, 23)
    assert b"".join(rows) == image.convert("RGBA").tobytes()


def test_sixteen_bit_pngs_are_not_read() -> None:
    out = io.BytesIO()
    Image.new("I;16", (4, 4)).save(out, "PNG")
    assert decode_png_rgba(out.getvalue()) is None
