"""The local backend's edits: PNG pixels read as Pillow reads them, whatever the
filters; the result in any output format; streamed as coarse versions, then the image."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from gateway.backends.base import EDIT, ImageRequest
from gateway.backends.local import LocalBackend
from gateway.backends.local_edit import decode_png_rgba
from gateway.media.inspect import inspect_image
from tests.support.backend_cases import image_request, input_image
from tests.support.images import pattern_png, pixels, rgba_png


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


def _edit(**changes: Any) -> ImageRequest:
    return image_request(
        width=48,
        height=40,
        seed=5,
        operation=EDIT,
        images=(input_image(pattern_png(48, 40)),),
        mask=input_image(rgba_png(48, 40, (8, 8, 24, 24)), "mask.png"),
        **changes,
    )


async def test_edits_are_made_in_the_requested_format() -> None:
    backend = LocalBackend("l", {})
    [png] = await backend.generate(_edit())
    [webp] = await backend.generate(_edit(output_format="webp"))
    [jpeg] = await backend.generate(_edit(output_format="jpeg", output_compression=80))

    assert (png.media_type, webp.media_type, jpeg.media_type) == (
        "image/png",
        "image/webp",
        "image/jpeg",
    )
    assert inspect_image(webp.data).media_type == "image/webp"
    assert inspect_image(jpeg.data).media_type == "image/jpeg"
    assert pixels(webp.data) == pixels(png.data)  # lossless, pixel for pixel
    size, _ = pixels(jpeg.data)
    assert size == (48, 40)


async def test_a_streamed_edit_ends_with_the_image_the_edit_makes() -> None:
    backend = LocalBackend("l", {})
    request = _edit(n=2, stream=True, partial_images=2)

    events = [event async for event in backend.stream(request)]

    assert [(e.index, e.partial_index) for e in events] == [
        (0, 0),
        (0, 1),
        (0, None),
        (1, 0),
        (1, 1),
        (1, None),
    ]
    made = await backend.generate(_edit(n=2))
    assert [e.image.data for e in events if e.completed] == [image.data for image in made]
    # Coarser first: squares of 32, then 16 pixels, each of one colour.
    _, coarsest = pixels(events[0].image.data)
    assert coarsest[0] == coarsest[31] == coarsest[31 * 48] != coarsest[32]
    assert len(set(coarsest)) < len(set(pixels(made[0].data)[1]))
