"""Parsing an Images API answer of 1 MiB images as ``b64_json``, timed in one run.

    python -m bench.answer_parse [--size-kib 1024] [--rounds 300]

prints milliseconds per answer, for 1 and 4 images, written compactly (``{"b64_json":
"..."}`` without spaces) and as ``json.dumps`` writes it (a space after each colon, as
the benchmark's upstream does), for msgspec decoding the whole answer into the
``openai`` backend's types (``Raw`` fields: it finds where each string ends, byte by
byte) and for what the backend calls (:func:`gateway.backends.openai.decode_answer`);
then, for scale, finding a 1 MiB image's closing quote with ``bytes.find`` (memchr)
and checking its base64 with pybase64. Run it on a quiet machine; compare within one
run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os

import pybase64

from bench.base64_speed import ms_per_call
from gateway.backends import openai

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()

    texts = [base64.b64encode(os.urandom(args.size_kib * 1024)).decode() for _ in range(4)]
    print(f"{args.size_kib} KiB images, ms per answer (mean of {args.rounds})")
    print(f"{'answer':<20} {'msgspec':>8} {'gateway':>8}")
    for n in (1, 4):
        document = {
            "created": 1700000000,
            "data": [{"b64_json": text, "revised_prompt": None} for text in texts[:n]],
        }
        layouts = {
            "compact": json.dumps(document, separators=(",", ":")).encode(),
            "json.dumps": json.dumps(document).encode(),
        }
        for layout, body in layouts.items():
            whole = ms_per_call(lambda body=body: openai._ANSWER.decode(body), args.rounds)
            fast = ms_per_call(lambda body=body: openai.decode_answer(body), args.rounds)
            print(f"{f'n={n}, {layout}':<20} {whole:8.3f} {fast:8.3f}")
    quoted = f'"{texts[0]}"'.encode()
    text = memoryview(quoted)[1:-1]
    find = ms_per_call(lambda: quoted.find(b'"', 1), args.rounds)
    check = ms_per_call(lambda: pybase64.b64decode(text, validate=True), args.rounds)
    print(f"one image: closing quote (bytes.find) {find:.3f}, pybase64 check {check:.3f}")


if __name__ == "__main__":
    main()
