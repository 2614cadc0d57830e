"""A lossless WebP (VP8L) of a picture made of bands of colour runs, in pure Python.

The ``local`` backend's pictures are bands of rows, each row runs of one colour (tiles).
VP8L codes such a picture in a few hundred bytes without an imaging library: each run is
one literal pixel and a backward reference to the pixel on its left, and the other rows
of a band one backward reference to the row above (LZ77 distance code 1), so the bit
stream is a few symbols per tile. The prefix codes are built for the symbols used (all
of nearly one length: the data is too small for a better fit to matter), written as the
format says: "simple" codes for one or two symbols, else code lengths coded with a
code-length code. Decoders read it as any lossless WebP.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["Band", "encode_bands"]

#: ``(rows, runs)``: ``rows`` identical rows, each the ``(rgb, length)`` runs in order.
Band = tuple[int, Sequence[tuple[bytes, int]]]

_CODE_LENGTH_ORDER = (17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
_MAX_COPY = 4096
_GREEN_ALPHABET = 256 + 24  # literals, then length prefix codes (no colour cache)
_DISTANCE_ALPHABET = 40
#: LZ77 distance codes (VP8L's 2-D neighbourhood): the pixel above, the pixel to the left.
_ABOVE, _LEFT = 1, 2


class _Bits:
    """Bits written least significant first, as VP8L reads them."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def write(self, value: int, count: int) -> None:
        self.value |= value << self.count
        self.count += count

    def to_bytes(self) -> bytes:
        return self.value.to_bytes(-(-self.count // 8), "little")


def _prefix(value: int) -> tuple[int, int, int]:
    """``value`` (1-based) as VP8L's ``(prefix code, extra bits count, extra bits)``."""
    d = value - 1
    if d < 4:
        return d, 0, 0
    high = d.bit_length() - 1
    second = (d >> (high - 1)) & 1
    extra = high - 1
    return 2 * high + second, extra, d & ((1 << extra) - 1)


class _Code:
    """A complete prefix code over ``symbols``, and how it is written."""

    def __init__(self, symbols: set[int], alphabet: int) -> None:
        used = sorted(symbols)
        if len(used) == 1 and used[0] >= 256:  # a simple code holds symbols < 256 only
            used = sorted({*used, 0})
        self.alphabet = alphabet
        self.lengths = [0] * alphabet
        count = len(used)
        if count > 1:
            top = (count - 1).bit_length()
            shorter = (1 << top) - count  # these take one bit less: the code is complete
            for position, symbol in enumerate(used):
                self.lengths[symbol] = top - 1 if position < shorter else top
        self.used = used
        self.codes = _canonical(self.lengths)

    def write_code(self, bits: _Bits) -> None:
        used = self.used
        if len(used) <= 2 and all(symbol < 256 for symbol in used):
            bits.write(1, 1)  # a simple code
            bits.write(len(used) - 1, 1)
            first = used[0]
            if first < 2:
                bits.write(0, 1)
                bits.write(first, 1)
            else:
                bits.write(1, 1)
                bits.write(first, 8)
            if len(used) == 2:
                bits.write(used[1], 8)
            self.codes = {used[0]: (0, 0)} if len(used) == 1 else {used[0]: (0, 1), used[1]: (1, 1)}
            return
        bits.write(0, 1)  # a normal code: its code lengths, coded
        length_code = _Code(set(self.lengths), 19)
        last = max(_CODE_LENGTH_ORDER.index(s) for s in length_code.used)
        count = max(4, last + 1)
        bits.write(count - 4, 4)
        for symbol in _CODE_LENGTH_ORDER[:count]:
            bits.write(length_code.lengths[symbol], 3)
        bits.write(0, 1)  # every symbol's length follows (no max_symbol)
        for length in self.lengths:
            length_code.put(bits, length)

    def put(self, bits: _Bits, symbol: int) -> None:
        code, length = self.codes[symbol]
        bits.write(code, length)


def _canonical(lengths: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Symbol -> (its code bit-reversed for an LSB-first reader, length)."""
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    for length in range(1, 16):
        for symbol, own in enumerate(lengths):
            if own == length:
                reversed_code = int(format(code, f"0{length}b")[::-1], 2)
                codes[symbol] = (reversed_code, length)
                code += 1
        code <<= 1
    return codes


def encode_bands(width: int, height: int, bands: Sequence[Band]) -> bytes:
    """A lossless WebP of ``width`` x ``height`` (opaque) drawn by ``bands``, top down;
    each band's runs must add up to ``width`` and the rows to ``height``."""
    # The symbols: per run a literal (green, red, blue; alpha 255) and, if it is longer
    # than one pixel, a copy from the left; per band's further rows copies from above.
    ops: list[tuple[str, int, int, int]] = []  # ("pixel", r, g, b) / ("copy", length, dist, 0)
    for rows, runs in bands:
        for rgb, length in runs:
            ops.append(("pixel", rgb[0], rgb[1], rgb[2]))
            if length > 1:
                ops.append(("copy", length - 1, _LEFT, 0))
        left = (rows - 1) * width
        while left > 0:
            step = min(left, _MAX_COPY)
            ops.append(("copy", step, _ABOVE, 0))
            left -= step
    green, red, blue, distance = set(), set(), set(), set()
    for kind, a, b, c in ops:
        if kind == "pixel":
            red.add(a)
            green.add(b)
            blue.add(c)
        else:
            green.add(256 + _prefix(a)[0])
            distance.add(_prefix(b)[0])
    codes = (
        _Code(green, _GREEN_ALPHABET),
        _Code(red or {0}, 256),
        _Code(blue or {0}, 256),
        _Code({255}, 256),
        _Code(distance or {0}, _DISTANCE_ALPHABET),
    )

    bits = _Bits()
    bits.write(0x2F, 8)  # the VP8L signature
    bits.write(width - 1, 14)
    bits.write(height - 1, 14)
    bits.write(0, 1)  # no alpha in use
    bits.write(0, 3)  # version 0
    bits.write(0, 1)  # no transform
    bits.write(0, 1)  # no colour cache
    bits.write(0, 1)  # one prefix code group for the whole picture
    for code in codes:
        code.write_code(bits)
    green_code, red_code, blue_code, alpha_code, distance_code = codes
    for kind, a, b, c in ops:
        if kind == "pixel":
            green_code.put(bits, b)
            red_code.put(bits, a)
            blue_code.put(bits, c)
            alpha_code.put(bits, 255)
        else:
            prefix, extra_count, extra = _prefix(a)
            green_code.put(bits, 256 + prefix)
            bits.write(extra, extra_count)
            prefix, extra_count, extra = _prefix(b)
            distance_code.put(bits, prefix)
            bits.write(extra, extra_count)
    data = bits.to_bytes()
    chunk = b"VP8L" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk
