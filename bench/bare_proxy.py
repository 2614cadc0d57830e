"""B1: a bare aiohttp pass-through proxy, the gateway's floor.

Same server settings and event loop as ``gateway serve`` (uvloop, access log off, one
shared ``ClientSession`` made in a cleanup context), forwarding the request body to
the upstream and returning the upstream's body. No auth, no limits, no JSON parsing.

    python -m bench.bare_proxy --port 9001 --upstream http://127.0.0.1:9000/v1

``--reuse-port`` lets several of these processes share one port (the 2-process B1).
``--max-connections`` is the session's connection limit (aiohttp's default, 100, when
not given). ``--download`` is the floor for an upstream that answers with image URLs
(the image workload's ``url`` variant): it fetches each URL with the same session and
answers ``{"created", "data": [{"b64_json", "revised_prompt"}]}``, as the gateway does,
built with one join of the base64 bytes.
``--client gateway`` forwards with the gateway's own upstream client
(:mod:`gateway.backends.h1`) instead of ``aiohttp.ClientSession``: B1h, the floor for
a proxy built the way the gateway is.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.backends import h1
from gateway.redis.pipelined import PipelinedRedis, PipelinedScript

__all__ = ["make_app"]

_SESSION = web.AppKey("session", aiohttp.ClientSession)
_CLIENT = web.AppKey("client", h1.Client)
_ROUND_TRIP = web.AppKey("round_trip", PipelinedScript)
_HEADERS = {"Content-Type": "application/json"}
#: The least a Redis round trip can be: a script that does nothing.
_NOTHING = "return 1"


def make_app(
    upstream: str,
    client: str = "aiohttp",
    redis_url: str = "",
    *,
    max_connections: int | None = None,
    download: bool = False,
) -> web.Application:
    """A proxy for ``POST /v1/images/generations`` to ``{upstream}/images/generations``.

    With ``redis_url``, each request first makes one Redis round trip (an ``EVALSHA``
    of a script that does nothing, through the gateway's own Redis client), as every
    gateway request must: the floor for a proxy that admits through Redis.
    """
    target = upstream.rstrip("/") + "/images/generations"

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = None if max_connections is None else aiohttp.TCPConnector(limit=max_connections)
        app[_SESSION] = aiohttp.ClientSession(connector=connector)
        yield
        await app[_SESSION].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app[_SESSION].post(target, data=body, headers=_HEADERS) as reply:
            data = await reply.read()
            return web.Response(body=data, status=reply.status, content_type="application/json")

    async def forward_downloading(request: web.Request) -> web.Response:
        body = await request.read()
        session = request.app[_SESSION]
        async with session.post(target, data=body, headers=_HEADERS) as reply:
            if reply.status != 200:
                return web.Response(body=await reply.read(), status=reply.status)
            payload = json.loads(await reply.read())

        async def fetch(url: str) -> bytes:
            async with session.get(url) as image:
                image.raise_for_status()
                return await image.read()

        items = payload["data"]
        images = await asyncio.gather(*(fetch(item["url"]) for item in items))
        data = b",".join(
            b'{"b64_json": "' + base64.b64encode(image) + b'", "revised_prompt": null}'
            for image in images
        )
        created = str(payload["created"]).encode()
        answer = b'{"created": ' + created + b', "data": [' + data + b"]}"
        return web.Response(body=answer, content_type="application/json")

    async def gateway_client(app: web.Application) -> AsyncIterator[None]:
        app[_CLIENT] = h1.Client(max_connections=200)  # the gateway's default pool size
        yield
        await app[_CLIENT].close()

    async def forward_with_gateway_client(request: web.Request) -> web.Response:
        body = await request.read()
        reply = await request.app[_CLIENT].request(
            "POST", target, headers=_HEADERS, body=body, max_bytes=2**30, max_seconds=30
        )
        return web.Response(body=reply.body, status=reply.status, content_type="application/json")

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        redis = PipelinedRedis(redis_url, timeout=5)
        app[_ROUND_TRIP] = PipelinedScript(redis, _NOTHING)
        yield
        await redis.aclose()

    def after_round_trip(handler: Handler) -> Handler:
        async def admitted_forward(request: web.Request) -> web.StreamResponse:
            await request.app[_ROUND_TRIP]((), ())
            return await handler(request)

        return admitted_forward

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    handler: Handler = forward
    if client == "gateway":
        app.cleanup_ctx.append(gateway_client)
        handler = forward_with_gateway_client
    else:
        app.cleanup_ctx.append(session)
        if download:
            handler = forward_downloading
    if redis_url:
        app.cleanup_ctx.append(redis_client)
        handler = after_round_trip(handler)
    app.router.add_post("/v1/images/generations", handler)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL (…/v1)")
    parser.add_argument("--reuse-port", action="store_true", help="share the port (SO_REUSEPORT)")
    parser.add_argument(
        "--client",
        choices=("aiohttp", "gateway"),
        default="aiohttp",
        help="forward with aiohttp.ClientSession (B1) or the gateway's client (B1h)",
    )
    parser.add_argument(
        "--redis", default="", metavar="URL", help="one Redis round trip per request first"
    )
    parser.add_argument(
        "--max-connections", type=int, default=None, help="the session's limit (aiohttp's 100)"
    )
    parser.add_argument(
        "--download", action="store_true", help="download the upstream's image URLs (url variant)"
    )
    args = parser.parse_args()
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as gateway serve does
    web.run_app(
        make_app(
            args.upstream,
            args.client,
            args.redis,
            max_connections=args.max_connections,
            download=args.download,
        ),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        reuse_port=args.reuse_port or None,
    )


if __name__ == "__main__":
    main()
