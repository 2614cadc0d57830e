"""A slow fake upstream answering with real-sized images: the image workload.

``POST /b64/v1/images/generations`` waits ``--delay`` seconds, then answers ``{"created",
"data": [{"b64_json": ..., "revised_prompt": null}] * n}``, ``n`` from the request
(1 to ``--max-n``). ``POST /url/v1/images/generations`` waits the same, then answers
``data[i].url`` = ``http://<host>:<port>/images/<i>.png`` instead, and ``GET
/images/<i>.png`` serves those bytes (at once). ``GET /healthz`` answers 200.

Each image is ``--size-kib`` KiB of random pixels in a PNG whose IDAT is stored
(deflate without compression) so that nothing along the way can shrink it, with
correct CRCs and Adler-32, so a gateway that checks images accepts it. Image ``i`` is
made from seed ``i``: the same bytes on every run. Every body is built once, at start:
a request costs the upstream a JSON decode of the small request and one write.

    python -m bench.image_upstream --port 9000 [--delay 2] [--size-kib 1024] [--max-n 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import random
import struct
import time
import zlib
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = [
    "B64_PREFIX",
    "URL_PREFIX",
    "ImageBodies",
    "check_png",
    "make_app",
    "stored_png",
]

#: The two variants' base paths: a backend's ``base_url`` is ``<upstream><prefix>``.
B64_PREFIX = "/b64/v1"
URL_PREFIX = "/url/v1"
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bytes of a stored PNG beyond its pixel rows: signature, IHDR, IEND, the IDAT chunk's
#: frame and the zlib header and Adler-32 (each stored block adds 5 more).
_FIXED_OVERHEAD = 8 + 25 + 12 + 12 + 2 + 4
_STORED_BLOCK = 65535


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def stored_png(size_bytes: int, seed: int) -> bytes:
    """An RGB PNG of random pixels, about ``size_bytes`` long (never more), square or one
    row taller than wide, its IDAT a zlib stream of stored blocks (level 0)."""
    budget = size_bytes - _FIXED_OVERHEAD
    # each 65,535 bytes of rows cost 5 bytes of block header
    raw_budget = budget - 5 * math.ceil(budget / (_STORED_BLOCK + 5))
    width = max(1, math.isqrt(max(1, raw_budget) // 3))
    row = 1 + 3 * width
    height = max(1, raw_budget // row)
    rng = random.Random(seed)
    pixels = rng.randbytes(row * height)
    # filter type 0 (None) at the start of every row
    raw = bytearray(pixels)
    raw[::row] = bytes(height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 0))
        + _chunk(b"IEND", b"")
    )


def check_png(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a PNG whose structure and CRCs are right and whose image
    data inflates to exactly its rows; ``ValueError`` otherwise."""
    if not data.startswith(_SIGNATURE):
        raise ValueError("no PNG signature")
    position, idat, size, seen_end = len(_SIGNATURE), bytearray(), (0, 0), False
    while position < len(data):
        if position + 12 > len(data):
            raise ValueError("a truncated chunk")
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack_from(">I", data, position + 8 + length)
        if len(body) != length or zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"chunk {kind!r}: bad length or CRC")
        if kind == b"IHDR":
            size = struct.unpack_from(">II", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            seen_end = True
        position += 12 + length
    if not seen_end or size == (0, 0):
        raise ValueError("no IHDR or no IEND")
    width, height = size
    if len(zlib.decompress(bytes(idat))) != height * (1 + 3 * width):
        raise ValueError("IDAT does not hold width x height RGB rows")
    return width, height


@dataclass(frozen=True)
class ImageBodies:
    """Every answer the upstream gives, encoded once."""

    images: tuple[bytes, ...]
    b64: tuple[bytes, ...]
    url: tuple[bytes, ...]

    @classmethod
    def build(cls, *, size_kib: int, max_n: int, base_url: str) -> ImageBodies:
        images = tuple(stored_png(size_kib * 1024, seed) for seed in range(max_n))
        created = int(time.time())

        def body(items: list[dict[str, object]]) -> bytes:
            return json.dumps({"created": created, "data": items}).encode()

        encoded = [base64.b64encode(image).decode("ascii") for image in images]
        b64 = tuple(
            body([{"b64_json": e, "revised_prompt": None} for e in encoded[:n]])
            for n in range(1, max_n + 1)
        )
        url = tuple(
            body([{"url": f"{base_url}/images/{i}.png", "revised_prompt": None} for i in range(n)])
            for n in range(1, max_n + 1)
        )
        return cls(images=images, b64=b64, url=url)


def _requested_n(body: bytes, most: int) -> int:
    try:
        n = json.loads(body).get("n", 1)
    except (ValueError, AttributeError):
        n = 1
    return n if isinstance(n, int) and 1 <= n <= most else 1


def make_app(bodies: ImageBodies, delay: float) -> web.Application:
    most = len(bodies.images)

    def generation(answers: tuple[bytes, ...]) -> Handler:
        async def generate(request: web.Request) -> web.Response:
            n = _requested_n(await request.read(), most)
            await asyncio.sleep(delay)
            return web.Response(body=answers[n - 1], content_type="application/json")

        return generate

    async def image(request: web.Request) -> web.Response:
        index = request.match_info["index"]
        if not index.isdigit() or int(index) >= most:
            raise web.HTTPNotFound()
        return web.Response(body=bodies.images[int(index)], content_type="image/png")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(B64_PREFIX + "/images/generations", generation(bodies.b64))
    app.router.add_post(URL_PREFIX + "/images/generations", generation(bodies.url))
    app.router.add_get("/images/{index}.png", image)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds before answering (2)")
    parser.add_argument("--size-kib", type=int, default=1024, help="KiB per image (1024)")
    parser.add_argument("--max-n", type=int, default=4, help="most images per answer (4)")
    args = parser.parse_args()
    import uvloop

    bodies = ImageBodies.build(
        size_kib=args.size_kib, max_n=args.max_n, base_url=f"http://{args.host}:{args.port}"
    )
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as gateway serve does
    web.run_app(
        make_app(bodies, args.delay), host=args.host, port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
