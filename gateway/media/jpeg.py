"""A baseline JPEG of a picture made of flat 8x8 blocks, in pure Python.

The ``local`` backend's pictures are tiles of one colour each, so every 8x8 block a JPEG
encoder sees is flat (or, where a tile edge crosses a block, taken as the colour of its
first pixel): its DCT has a DC coefficient and nothing else. Such a JPEG needs no DCT, no
AC codes and no imaging library: each block is a DC difference and an end-of-block code,
rows of blocks within a band of tiles repeat, and a picture has few colours: a
1024x1024 picture of the ``local`` backend is encoded in about 10 ms. Decoders read it
as any baseline JPEG (JFIF, YCbCr 4:4:4).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

__all__ = ["encode_flat_blocks"]

#: (counts of codes of length 1..16, symbols): JPEG's standard DC tables (Annex K.3).
_DC_LUMA = ((0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0), tuple(range(12)))
_DC_CHROMA = ((0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0), tuple(range(12)))
#: An AC table with one symbol, end-of-block, coded as ``0``.
_AC_EOB_ONLY = ((1,) + (0,) * 15, (0,))
#: The first (DC) entries of the standard quantisation tables (Annex K.1).
_LUMA_DC_STEP = 16
_CHROMA_DC_STEP = 17


def _codes(table: tuple[Sequence[int], Sequence[int]]) -> dict[int, str]:
    """Symbol -> its canonical Huffman code as a string of bits."""
    counts, symbols = table
    codes: dict[int, str] = {}
    code, at = 0, 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            codes[symbols[at]] = format(code, f"0{length}b")
            code += 1
            at += 1
        code <<= 1
    return codes


_DC_CODES = (_codes(_DC_LUMA), _codes(_DC_CHROMA), _codes(_DC_CHROMA))
_EOB = _codes(_AC_EOB_ONLY)[0]


def _step(base: int, quality: int) -> int:
    """The IJG scaling of a quantisation step for ``quality`` (1-100)."""
    quality = min(100, max(1, quality))
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return min(255, max(1, (base * scale + 50) // 100))


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _dht(table_class: int, table_id: int, table: tuple[Sequence[int], Sequence[int]]) -> bytes:
    counts, symbols = table
    return bytes([table_class << 4 | table_id, *counts, *symbols])


def encode_flat_blocks(
    width: int,
    height: int,
    colour_at: Callable[[int, int], bytes],
    quality: int = 100,
) -> bytes:
    """A JPEG of ``width`` x ``height`` whose 8x8 block at pixel ``(x, y)`` (its top
    left) has the colour ``colour_at(x, y)`` (3 bytes, RGB).

    ``quality`` (1-100) scales the quantisation as libjpeg's ``-quality`` does.
    """
    steps = (_step(_LUMA_DC_STEP, quality), _step(_CHROMA_DC_STEP, quality))
    divisors = (steps[0], steps[1], steps[1])
    columns = -(-width // 8)
    rows = -(-height // 8)
    previous_row: tuple[tuple[int, int, int], ...] | None = None
    previous_bits, previous_start = "", (0, 0, 0)
    predictor = (0, 0, 0)
    bits: list[str] = []
    known: dict[bytes, tuple[int, int, int]] = {}  # pictures have few colours

    def dc_of(rgb: bytes) -> tuple[int, int, int]:
        found = known.get(rgb)
        if found is None:
            found = known[rgb] = _dc_values(rgb, divisors)
        return found

    for block_row in range(rows):
        y = block_row * 8
        row = tuple(dc_of(colour_at(column * 8, y)) for column in range(columns))
        if row == previous_row and predictor == previous_start:
            bits.append(previous_bits)  # the same blocks after the same predictor
            continue
        start, pieces = predictor, []
        for block in row:
            for component in range(3):
                diff = block[component] - predictor[component]
                size = abs(diff).bit_length()
                pieces.append(_DC_CODES[component][size])
                if size:
                    pieces.append(format(diff if diff > 0 else diff + (1 << size) - 1, f"0{size}b"))
                pieces.append(_EOB)
            predictor = block
        previous_row, previous_bits, previous_start = row, "".join(pieces), start
        bits.append(previous_bits)
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # padding with one bits, as the standard says
    data = int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""
    data = data.replace(b"\xff", b"\xff\x00")  # byte stuffing

    quant = bytes([0, *[steps[0]] * 64, 1, *[steps[1]] * 64])
    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1])
    tables = (
        _dht(0, 0, _DC_LUMA)
        + _dht(0, 1, _DC_CHROMA)
        + _dht(1, 0, _AC_EOB_ONLY)
        + _dht(1, 1, _AC_EOB_ONLY)
    )
    scan = bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])
    return b"".join(
        (
            b"\xff\xd8",
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            _segment(0xDB, quant),
            _segment(0xC0, frame),
            _segment(0xC4, tables),
            _segment(0xDA, scan),
            data,
            b"\xff\xd9",
        )
    )


def _dc_values(rgb: bytes, divisors: tuple[int, int, int]) -> tuple[int, int, int]:
    """The quantised DC coefficients (Y, Cb, Cr) of a block of colour ``rgb``."""
    r, g, b = rgb[0], rgb[1], rgb[2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    # A flat block's DC coefficient is 8 times its level-shifted value.
    return (
        round(8 * (y - 128) / divisors[0]),
        round(8 * (cb - 128) / divisors[1]),
        round(8 * (cr - 128) / divisors[2]),
    )
