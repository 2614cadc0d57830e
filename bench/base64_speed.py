"""Base64 of a 1 MiB image: the codecs the gateway could use, timed in one run.

    python -m bench.base64_speed [--size-kib 1024] [--rounds 300]

prints milliseconds per image to decode (strict: digits only, padded) and to encode,
for ``binascii`` (what ``base64`` calls), msgspec's JSON codec (which writes ``bytes``
as base64 strings) and pybase64 (what :mod:`gateway.backends.base64_codec` uses), and
the CRC-32 of the decoded bytes for scale. Run it on a quiet machine; compare within
one run.
"""

from __future__ import annotations

import argparse
import base64
import os
import time
import zlib
from collections.abc import Callable

import msgspec
import pybase64

__all__ = ["main", "ms_per_call"]


def ms_per_call(call: Callable[[], object], rounds: int) -> float:
    """Milliseconds per ``call()``, over ``rounds`` calls after one to warm up."""
    call()
    start = time.perf_counter()
    for _ in range(rounds):
        call()
    return (time.perf_counter() - start) / rounds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()

    data = os.urandom(args.size_kib * 1024)
    text = base64.b64encode(data)
    quoted = b'"' + text + b'"'
    json_bytes = msgspec.json.Decoder(bytes)
    json_encoder = msgspec.json.Encoder()
    rows = {
        "binascii": (
            lambda: base64.b64decode(text, validate=True),
            lambda: base64.b64encode(data),
        ),
        "msgspec": (lambda: json_bytes.decode(quoted), lambda: json_encoder.encode(data)),
        "pybase64": (
            lambda: pybase64.b64decode(text, validate=True),
            lambda: pybase64.b64encode(data),
        ),
    }
    print(f"{args.size_kib} KiB, ms per image (mean of {args.rounds})")
    print(f"{'codec':<10} {'decode':>8} {'encode':>8}")
    for name, (decode, encode) in rows.items():
        print(
            f"{name:<10} {ms_per_call(decode, args.rounds):8.3f}"
            f" {ms_per_call(encode, args.rounds):8.3f}"
        )
    print(f"{'crc32':<10} {ms_per_call(lambda: zlib.crc32(data), args.rounds):8.3f}")


if __name__ == "__main__":
    main()
