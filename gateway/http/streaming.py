"""Streamed image answers: partial images as Server-Sent Events, in OpenAI's format.

``stream: true`` answers ``text/event-stream``: for each image, up to ``partial_images``
``<kind>.partial_image`` events (``b64_json``, ``partial_image_index``), then its
``<kind>.completed`` event with the final image and ``usage``, ``kind`` being
``image_generation`` (generations) or ``image_edit`` (edits). A failure after the first
event is an ``error`` event (``{"error": {...}}``, which the official SDKs raise).

Admission and settlement are the synchronous path's (:mod:`gateway.http.images`): the
request is admitted and its ``n`` images reserved in one Redis round trip before the
upstream call; a failure before the first event is the usual JSON error (fallbacks
tried, nothing charged). Then **only completed images are charged**: before each
completed event is written the journal is told that one more image is delivered (no
round trip), and when the stream ends, however it ends, the images not completed are
given back. A client that leaves stops the upstream call at once (the connection's loss
is awaited alongside the upstream's next event) and is charged for the images completed
before it left.

The headers leave with the first event, so its ``Server-Timing`` is the time until then:
the upstream's until its first event, and the gateway's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator

import msgspec
from aiohttp import web

from gateway import errors
from gateway.backends.base import ImageBuffer, ImageEvent, ImageRequest
from gateway.backends.resilience import GuardedBackend
from gateway.http.images import CREDITS_HEADER, accepts
from gateway.http.middlewares import LOG_FIELDS, REQUEST_ID, server_timing
from gateway.http.protocol import connection_closed
from gateway.http.ratelimit_headers import rate_limit_headers
from gateway.http.relay import relay_pieces
from gateway.http.responses import error_body
from gateway.http.schemas.images import CompletedImageEvent, PartialImageEvent, StreamUsage
from gateway.keys.cache import KeyRecord
from gateway.limits.decision import Decision
from gateway.metrics import Metrics
from gateway.services import Services

__all__ = ["EventStream", "stream_images"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


class _ClientGone(Exception):
    """The client closed the connection mid-stream."""


class EventStream(web.StreamResponse):
    """A 200 ``text/event-stream``: one ``event:``/``data:`` block per :meth:`send`.

    It is prepared by the handler (the first event must go out as soon as it exists),
    so it carries the headers the request middleware would add afterwards itself.
    """

    def __init__(self, request: web.Request, headers: dict[str, str]) -> None:
        super().__init__(headers=headers)
        self.content_type = "text/event-stream"
        self.headers["Cache-Control"] = "no-cache"
        self.headers["X-Accel-Buffering"] = "no"  # proxies: pass each event on at once
        self.headers["X-Request-ID"] = request[REQUEST_ID]
        self.headers["X-Content-Type-Options"] = "nosniff"
        self.headers["Server"] = "image-gateway"
        self.headers["Server-Timing"] = server_timing(request)

    async def send(self, event: str, data: bytes | list[ImageBuffer]) -> None:
        """Write one event; ``data`` is its JSON (one line), maybe in pieces (an image's
        base64 among them, written as it is: no copy)."""
        pieces = [data] if isinstance(data, bytes) else list(data)
        pieces[0] = b"event: " + event.encode() + b"\ndata: " + bytes(pieces[0])
        pieces[-1] = bytes(pieces[-1]) + b"\n\n"
        for piece in pieces:
            await self.write(piece)

    async def send_image(
        self, kind: str, event: ImageEvent, request: ImageRequest, created_at: int
    ) -> None:
        """``event`` as ``<kind>.partial_image`` or ``<kind>.completed`` (OpenAI's fields)."""
        common = {
            "b64_json": "",  # the image's base64 goes in this slot as it is
            "created_at": created_at,
            "size": f"{request.width}x{request.height}",
            "quality": request.quality or "auto",
            "background": request.background or "auto",
            "output_format": _FORMATS.get(event.image.media_type, "png"),
        }
        body: PartialImageEvent | CompletedImageEvent
        if event.partial_index is not None:
            name = f"{kind}.partial_image"
            body = PartialImageEvent(
                type=name,  # type: ignore[arg-type]  # one of the Literal's values
                partial_image_index=event.partial_index,
                **common,  # type: ignore[arg-type]
            )
        else:
            name = f"{kind}.completed"
            body = CompletedImageEvent(
                type=name,  # type: ignore[arg-type]
                usage=_usage(event),
                **common,  # type: ignore[arg-type]
            )
        await self.send(name, relay_pieces(_encode(body), [event.image]))


_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


def _usage(event: ImageEvent) -> StreamUsage:
    usage = StreamUsage(images=1)
    reported = event.usage or {}
    for name in ("input_tokens", "output_tokens", "total_tokens"):
        value = reported.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            setattr(usage, name, value)
    details = reported.get("input_tokens_details")
    if isinstance(details, dict):
        usage.input_tokens_details = {
            k: v for k, v in details.items() if isinstance(k, str) and type(v) is int
        } or usage.input_tokens_details
    return usage


async def stream_images(
    request: web.Request,
    services: Services,
    record: KeyRecord,
    chain: tuple[GuardedBackend, ...],
    image_request: ImageRequest,
    decision: Decision,
    *,
    kind: str = "image_generation",
    spent: list[float] | None = None,
) -> web.StreamResponse:
    """Answer an admitted request (``decision``) with its images as events (see the
    module), ``kind`` ``image_generation`` or ``image_edit``; the upstreams' time to the
    first event appended to ``spent`` (``Server-Timing``). Settles the reservation
    whatever happens. Raises the usual error when nothing was sent yet."""
    admission = services.admission
    metrics = services.metrics
    n = image_request.n
    delivered = 0
    events: AsyncGenerator[ImageEvent, None] | None = None
    response: EventStream | None = None
    backend_name = ""
    created_at = int(services.wall_clock())
    try:
        backend_name, events, first = await _first_event(chain, image_request, metrics, spent)
        event: ImageEvent | None = first
        headers = rate_limit_headers(decision)
        if decision.monthly_credits >= 0:  # the balance with the stream's images reserved
            headers[CREDITS_HEADER] = str(decision.credits_remaining)
        headers["X-Gateway-Backend"] = backend_name
        response = EventStream(request, headers)
        await response.prepare(request)
        closed = connection_closed(request)
        while event is not None:
            if event.completed:
                admission.undelivered(decision, n - delivered - 1)
            await response.send_image(kind, event, image_request, created_at)
            if event.completed:
                delivered += 1
                if delivered >= n:
                    break
            event = await _next_event(events, closed)
        if not delivered:  # partial images only: the stream ended without an image
            raise errors.UpstreamError("The image backend returned no images.")
    except (_ClientGone, ConnectionError):
        log.info("client left a stream after %d of %d images", delivered, n)
    except errors.GatewayError as exc:
        if response is None:
            raise
        log.warning("stream failed after %d of %d images (%s)", delivered, n, exc.code)
        with contextlib.suppress(ConnectionError):
            await response.send("error", _encode(error_body(exc)))
    finally:
        if events is not None:
            await asyncio.shield(_close(events))
        await asyncio.shield(admission.release(record, decision, n - delivered))
        if delivered and backend_name != chain[0].name:  # a fallback made them
            await asyncio.shield(admission.attribute(record, decision, backend_name, delivered))
        request[LOG_FIELDS].update(backend=backend_name or None, images=delivered)
        if delivered:
            model, plan = image_request.model, record.plan
            metrics.labelled(metrics.images_delivered, model, plan).inc(delivered)
            if decision.monthly_credits >= 0:
                charged = delivered * decision.price
                metrics.labelled(metrics.credits_charged, model, plan).inc(charged)
    assert response is not None
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _close(events: AsyncGenerator[ImageEvent, None]) -> None:
    with contextlib.suppress(Exception):
        await events.aclose()


async def _first_event(
    chain: tuple[GuardedBackend, ...],
    request: ImageRequest,
    metrics: Metrics,
    spent: list[float] | None,
) -> tuple[str, AsyncGenerator[ImageEvent, None], ImageEvent]:
    """The first backend of ``chain`` that can stream ``request`` and sends a first
    event: its name, its events, that event. Fallbacks as in
    :func:`gateway.http.images.call_backends`: a refusal is final; any other failure
    tries the next backend; the last one's error is raised."""
    error: errors.GatewayError | None = None
    for guarded in chain:
        if not accepts(guarded, request):
            continue
        events = guarded.stream(request)
        started = time.perf_counter()
        outcome = "ok"
        try:
            return guarded.name, events, await anext(events)
        except StopAsyncIteration:
            outcome, error = "error", errors.UpstreamError("The image backend sent no images.")
        except errors.UpstreamRefused:
            outcome = "refused"
            raise
        except errors.UpstreamTimeout as exc:
            outcome, error = "timeout", exc
        except errors.ServiceUnavailable as exc:
            outcome, error = "unavailable", exc
        except errors.UpstreamError as exc:
            outcome, error = "error", exc
        finally:
            elapsed = time.perf_counter() - started
            if spent is not None:
                spent.append(elapsed)
            metrics.labelled(metrics.upstream_seconds, guarded.name).observe(elapsed)
            metrics.labelled(metrics.upstream_calls, guarded.name, outcome).inc()
            if outcome != "ok":
                await _close(events)
        log.warning("backend %s failed to stream (%s)", guarded.name, error.code)
    raise error or errors.UpstreamError()


async def _next_event(
    events: AsyncGenerator[ImageEvent, None], closed: asyncio.Future[None] | None
) -> ImageEvent | None:
    """The next event (``None`` at the end), or :class:`_ClientGone` as soon as the
    connection is lost (the pending read is cancelled: the upstream call stops)."""
    if closed is None:
        with contextlib.suppress(StopAsyncIteration):
            return await anext(events)
        return None
    if closed.done():
        raise _ClientGone()
    pending = asyncio.ensure_future(anext(events))
    try:
        await asyncio.wait((pending, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    if pending.cancelled() or not pending.done():
        raise _ClientGone()
    try:
        return pending.result()
    except StopAsyncIteration:
        return None
