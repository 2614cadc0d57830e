"""Images checked as images: real ones pass with their dimensions, spoiled ones fail,
and no input makes the check raise anything but :class:`MalformedImage`."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.backends.local import render_png
from gateway.media.inspect import MAX_DIMENSION, ImageInfo, MalformedImage, inspect_image
from tests.support.images import chunk, encode, png, png_chunks, rgba_png

SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(3, 2), ImageInfo("png", "image/png", 3, 2)),
        (render_png("a fox", 1, 256, 128), ImageInfo("png", "image/png", 256, 128)),
        (encode("PNG", 40, 30), ImageInfo("png", "image/png", 40, 30)),
        (encode("JPEG", 33, 17), ImageInfo("jpeg", "image/jpeg", 33, 17)),
        (encode("JPEG", 33, 17, progressive=True), ImageInfo("jpeg", "image/jpeg", 33, 17)),
        (encode("WEBP", 41, 23), ImageInfo("webp", "image/webp", 41, 23)),
        (encode("WEBP", 41, 23, lossless=True), ImageInfo("webp", "image/webp", 41, 23)),
        (encode("WEBP", 41, 23, exif=b"Exif\0\0x"), ImageInfo("webp", "image/webp", 41, 23)),
        (encode("GIF", 19, 11), ImageInfo("gif", "image/gif", 19, 11)),
    ],
    ids=[
        "png",
        "local-png",
        "pillow-png",
        "jpeg",
        "progressive-jpeg",
        "lossy-webp",
        "lossless-webp",
        "extended-webp",
        "gif",
    ],
)
def test_real_images_pass_with_their_dimensions(data: bytes, expected: ImageInfo) -> None:
    assert inspect_image(data) == expected


def test_a_memoryview_is_read_as_well_as_bytes() -> None:
    assert inspect_image(memoryview(png(5, 4))).width == 5


def _webp_lying_about_its_size() -> bytes:
    data = bytearray(encode("WEBP", 20, 20))
    data[4:8] = struct.pack("<I", len(data) * 4)
    return bytes(data)


def _png_with(*chunks: bytes) -> bytes:
    return SIGNATURE + b"".join(chunks)


IHDR, IDAT, IEND = png_chunks(8, 8)
MALFORMED = {
    "empty": b"",
    "png-signature-then-garbage": SIGNATURE + b"garbage" * 20,
    "jpeg-soi-then-garbage": b"\xff\xd8\xff\xe0" + b"garbage" * 20,
    "webp-header-then-garbage": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"garbage" * 4,
    "gif-header-then-garbage": b"GIF89a" + b"garbage" * 20,
    "png-bad-crc-in-idat": _png_with(IHDR, IDAT[:-4] + b"\0\0\0\0", IEND),
    "png-bad-crc-in-ihdr": _png_with(chunk(b"IHDR", IHDR[8:-4], crc=1), IDAT, IEND),
    "png-truncated": png(8, 8)[:-5],
    "png-without-iend": _png_with(IHDR, IDAT),
    "png-without-idat": _png_with(IHDR, IEND),
    "png-idat-first": _png_with(IDAT, IHDR, IEND),
    "png-two-ihdr": _png_with(IHDR, IHDR, IDAT, IEND),
    "png-data-after-iend": png(8, 8) + b"trailing",
    "png-chunk-longer-than-the-data": _png_with(IHDR, b"\x7f\xff\xff\xffIDAT" + IDAT[8:]),
    "png-zero-width": _png_with(
        chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 8, 8, 2, 0, 0, 0)), IDAT, IEND
    ),
    "png-too-wide": _png_with(
        chunk(b"IHDR", struct.pack(">IIBBBBB", MAX_DIMENSION + 1, 8, 8, 2, 0, 0, 0)), IDAT, IEND
    ),
    "png-bad-bit-depth": _png_with(
        chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 7, 2, 0, 0, 0)), IDAT, IEND
    ),
    "png-unknown-critical-chunk": _png_with(IHDR, chunk(b"ZZZZ", b"x"), IDAT, IEND),
    "jpeg-truncated": encode("JPEG", 16, 16)[:-40],
    "jpeg-without-eoi": encode("JPEG", 16, 16)[:-2],
    "jpeg-data-after-eoi": encode("JPEG", 16, 16) + b"trailing",
    "jpeg-without-frame": b"\xff\xd8\xff\xda\x00\x02\x00\xff\xd9",
    "webp-lying-about-its-size": _webp_lying_about_its_size(),
    "webp-truncated": encode("WEBP", 20, 20)[:-7],
    "webp-unknown-first-chunk": b"RIFF\x0c\x00\x00\x00WEBPJUNK\x00\x00\x00\x00",
    "gif-truncated": encode("GIF", 16, 16)[:-3],
    "text": b"<html>this is not an image</html>",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_images_fail(data: bytes) -> None:
    with pytest.raises(MalformedImage):
        inspect_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_every_truncation_of_a_real_image_fails(fmt: str) -> None:
    data = encode(fmt, 12, 10)
    for end in range(len(data)):
        with pytest.raises(MalformedImage):
            inspect_image(data[:end])


REAL = [png(6, 5), encode("JPEG", 9, 7), encode("WEBP", 9, 7), encode("GIF", 9, 7)]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_malformed_image(data: bytes) -> None:
    for prefix in (b"", SIGNATURE, b"\xff\xd8", b"RIFF\0\0\0\0WEBP", b"GIF89a"):
        with contextlib.suppress(MalformedImage):
            inspect_image(prefix + data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(REAL),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
    st.binary(max_size=16),
)
def test_spoiled_real_images_raise_only_malformed_image(
    original: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(original)
    for position, value in flips:
        data[position % len(data)] = value
    del data[len(data) - cut % len(data) :]
    data += tail
    try:
        info = inspect_image(bytes(data))
    except MalformedImage:
        return
    assert 0 < info.width <= MAX_DIMENSION
    assert 0 < info.height <= MAX_DIMENSION


def test_png_alpha_is_reported() -> None:
    assert inspect_image(rgba_png(4, 4, None)).alpha
    assert not inspect_image(png(4, 4)).alpha
    chunks = png_chunks(4, 4)
    with_trns = (
        b"\x89PNG\r\n\x1a\n"
        + chunks[0]
        + chunk(b"tRNS", b"\x00\x00\x00\x00\x00\x00")
        + b"".join(chunks[1:])
    )
    assert inspect_image(with_trns).alpha
    assert not inspect_image(encode("WEBP", 4, 4)).alpha  # PNG only
