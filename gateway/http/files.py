"""``GET``/``HEAD /v1/files/{file_id}?expires=&signature=``: a stored image, by its link.

No API key: the signed link is the credential (``gateway/storage/links.py``). A valid
link answers the exact bytes with the file's ``Content-Type``, ``Content-Length``, a
strong ``ETag`` (files never change, so the id is the tag; ``If-None-Match`` -> 304),
``Cache-Control: private, max-age=<seconds the link has left>`` and one byte range on
request (206 with ``Content-Range``; 416 when it selects nothing; several ranges, or a
malformed one, are ignored and the whole file is sent, as RFC 9110 allows). Errors are
the domain's, so the error middleware gives them their JSON shape: 403
``invalid_signature`` / ``url_expired``, 404 ``not_found``, 503 ``storage_unavailable``.

The body is streamed, never held whole: a local file goes to the kernel with
``sendfile`` where the event loop offers it (the default asyncio loop; uvloop does not,
and then it is read in 256 KiB chunks in a worker thread, as aiohttp's ``FileResponse``
does); a remote object is streamed as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from gateway import errors
from gateway.storage import FILES_PATH, STORAGE, ByteRange, FileBody
from gateway.storage.base import resolve_range

__all__ = ["FILES_ROUTE", "add_file_routes", "serve_file"]

log = logging.getLogger(__name__)

#: The route of :func:`serve_file` (``HEAD`` comes with ``GET``).
FILES_ROUTE = FILES_PATH + "/{file_id}"
_BYTES = re.compile(r"\s*([0-9]{0,18})\s*-\s*([0-9]{0,18})\s*")


def add_file_routes(app: web.Application) -> None:
    app.router.add_get(FILES_ROUTE, serve_file)


async def serve_file(request: web.Request) -> web.StreamResponse:
    storage = request.app[STORAGE]
    file_id = request.match_info["file_id"]
    now = storage.clock()
    query = request.query
    expires = storage.links.signer.verify(
        file_id, query.get("expires"), query.get("signature"), now
    )
    etag = f'"{file_id}"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={max(0, int(expires - now))}",
        "Accept-Ranges": "bytes",
        # An image is all it may be: nothing in it runs, even opened on its own.
        "Content-Security-Policy": "default-src 'none'",
    }
    store = storage.store
    if _matches(request.headers.get("If-None-Match"), etag):
        await store.head(file_id)  # a swept file is 404, not 304
        return web.Response(status=304, headers=headers)
    byte_range = _requested_range(request, etag)
    if request.method == "HEAD":
        info = await store.head(file_id)
        span = resolve_range(byte_range, info.size)
        if span is None:
            raise errors.RangeNotSatisfiable(info.size)
        head = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
        head.content_type = info.content_type
        head.content_length = span[1] - span[0]
        if byte_range:
            head.headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{info.size}"
        return head
    body = await store.open(file_id, byte_range)
    return _BodyResponse(body, partial=byte_range is not None, headers=headers)


class _BodyResponse(web.StreamResponse):
    """Sends a :class:`FileBody` when aiohttp prepares it (as ``FileResponse`` does), so
    the middlewares' headers are in before anything is sent."""

    def __init__(self, body: FileBody, *, partial: bool, headers: dict[str, str]) -> None:
        super().__init__(status=206 if partial else 200, headers=headers)
        self._file_body = body
        self.content_type = body.info.content_type
        self.content_length = body.length
        if partial:
            self.headers["Content-Range"] = f"bytes {body.start}-{body.stop - 1}/{body.info.size}"

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        body = self._file_body
        try:
            writer = await super().prepare(request)
            if body.length:
                await self._send(request, body)
            await super().write_eof()
            return writer
        except errors.GatewayError as exc:
            # The status line is gone: all that is left is to cut the body short.
            log.warning("file %s: stopped mid-body: %s", body.info.file_id, exc.message)
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("the store failed mid-body") from None
        finally:
            body.close()

    async def _send(self, request: web.BaseRequest, body: FileBody) -> None:
        transport = request.transport
        if body.file is not None and transport is not None:
            try:
                await asyncio.get_running_loop().sendfile(
                    transport, body.file, body.start, body.length
                )
                return
            except NotImplementedError:  # uvloop, TLS: read it in chunks instead
                pass
        async for chunk in body.chunks():
            await self.write(chunk)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def _requested_range(request: web.Request, etag: str) -> ByteRange | None:
    """The one byte range asked for, or ``None`` (no ``Range``, an ``If-Range`` for
    another version, another unit, several ranges, or one that does not parse)."""
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _BYTES.fullmatch(spec)
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        return ByteRange(suffix=int(last)) if last else None
    if last and int(last) < int(first):
        return None
    return ByteRange(first=int(first), last=int(last) if last else None)
