"""A fast fake upstream speaking the OpenAI Images API.

``POST /v1/images/generations`` answers ``{"created": <unix>, "data": [{"b64_json":
<a small fixed PNG>}]}`` without looking at the request beyond reading it, so it costs
as little as an aiohttp server can. ``GET /healthz`` answers 200.

    python -m bench.upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import struct
import time
import zlib

from aiohttp import web

__all__ = ["PNG", "make_app", "png"]

_ROUTE = "/v1/images/generations"


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int = 8, height: int = 8) -> bytes:
    """A valid grey RGB PNG of the given size."""
    row = b"\x00" + b"\x80\x80\x80" * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * height))
        + _chunk(b"IEND", b"")
    )


PNG = png()
_B64 = base64.b64encode(PNG).decode("ascii")
_BODY_TAIL = ('"data": [{"b64_json": "' + _B64 + '", "revised_prompt": null}]}').encode()


async def _generate(request: web.Request) -> web.Response:
    await request.read()
    body = b'{"created": ' + str(int(time.time())).encode() + b", " + _BODY_TAIL
    return web.Response(body=body, content_type="application/json")


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post(_ROUTE, _generate)
    app.router.add_get("/healthz", _health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as gateway serve does
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
