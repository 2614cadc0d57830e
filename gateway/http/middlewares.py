"""Middlewares: request ids, the one place errors become responses, metrics, access log."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import errors
from gateway.http.responses import error_body, json_response
from gateway.keys.format import looks_like_key
from gateway.logs import AccessLog
from gateway.metrics import Metrics

__all__ = [
    "LOG_FIELDS",
    "REQUEST_ID",
    "UPSTREAM_SECONDS",
    "request_context_middleware",
    "server_timing",
]

log = logging.getLogger("gateway.access")

REQUEST_ID = web.RequestKey("request_id", str)
#: Fields a handler adds to the request's access-log line (key id, model, images ...).
LOG_FIELDS = web.RequestKey("log_fields", dict)
#: Set by a handler that calls upstreams (the generations): each call's seconds, as
#: measured for the upstream metrics. Its response then carries ``Server-Timing``: the
#: upstreams' time and the gateway's own (the rest of the time until the response).
UPSTREAM_SECONDS = web.RequestKey("upstream_seconds", list)
#: When the request came in (``time.perf_counter()``).
_STARTED = web.RequestKey("request_started", float)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_HTTP_CODES: dict[int, type[errors.GatewayError]] = {
    400: errors.InvalidRequest,
    404: errors.NotFound,
    413: errors.PayloadTooLarge,
}


class _MethodNotAllowed(errors.GatewayError):
    status, code, type = 405, "method_not_allowed", "invalid_request_error"
    default_message = "This method is not allowed on this path."


def _route_of(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


def request_context_middleware(
    metrics: Metrics, access_log: AccessLog, *, key_prefix: str
) -> Middleware:
    """Give every request an id, turn every error into OpenAI-shaped JSON, count, log.

    ``access_log`` is flushed by whoever made it, when the server stops. An incoming
    ``X-Request-ID`` is kept only if it is sane and does not look like an API key
    (``key_prefix``, or any value that passes the key checksum): a client that pastes
    its key there must not see it echoed or written to the access log.
    """
    # Request ids: unique (a random per-process prefix, then a count), not secret, and
    # 32 hex digits like uuid4().hex, without a system call per request.
    id_prefix = secrets.token_hex(8)
    sequence = itertools.count()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID")
        if (
            incoming is not None
            and _SANE_REQUEST_ID.fullmatch(incoming)
            and not looks_like_key(incoming, key_prefix)
        ):
            request_id = incoming
        else:
            request_id = f"{id_prefix}{next(sequence):016x}"
        request[REQUEST_ID] = request_id
        request[_STARTED] = started
        fields: dict[str, Any] = {}
        request[LOG_FIELDS] = fields
        code = ""
        try:
            response = await handler(request)
        except errors.GatewayError as exc:
            code = exc.code
            response = json_response(error_body(exc), status=exc.status, headers=exc.headers)
        except web.HTTPException as exc:
            response, code = _from_http_exception(exc)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            code = errors.GatewayError.code
            response = json_response(error_body(errors.GatewayError()), status=500)
        headers = response.headers
        headers["X-Request-ID"] = request_id
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Server"] = "image-gateway"
        elapsed = time.perf_counter() - started
        upstream = request.get(UPSTREAM_SECONDS)
        if upstream is not None and not response.prepared:  # a stream sent its own
            headers["Server-Timing"] = _server_timing(elapsed, upstream)
        route = _route_of(request)
        metrics.request_done(route, response.status, code, elapsed)
        if access_log.enabled():
            method, status = request.method, response.status
            access_log.write(
                f"{method} {route} {status}",
                {
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "code": code or None,
                    "latency_ms": round(elapsed * 1000, 2),
                    **fields,
                },
            )
        return response

    return middleware


def server_timing(request: web.Request) -> str:
    """The ``Server-Timing`` of ``request`` so far (its ``UPSTREAM_SECONDS``): for a
    response a handler prepares itself (a stream), whose headers leave before the
    middleware sees it."""
    now = time.perf_counter()
    elapsed = now - request.get(_STARTED, now)
    return _server_timing(elapsed, request.get(UPSTREAM_SECONDS) or [])


def _server_timing(elapsed: float, upstream: list[float]) -> str:
    """``gateway;dur=1.2, upstream;dur=2034.5`` (milliseconds; no upstream: no entry)."""
    if not upstream:
        return f"gateway;dur={elapsed * 1000:.1f}"
    spent = sum(upstream)
    return f"gateway;dur={(elapsed - spent) * 1000:.1f}, upstream;dur={spent * 1000:.1f}"


def _from_http_exception(exc: web.HTTPException) -> tuple[web.Response, str]:
    if exc.status == 405:
        error: errors.GatewayError = _MethodNotAllowed()
    else:
        cls = _HTTP_CODES.get(exc.status)
        if cls is None:
            cls = type(
                "HTTPError",
                (errors.GatewayError,),
                {"status": exc.status, "code": exc.reason.lower().replace(" ", "_")},
            )
        error = cls("Not found." if cls is errors.NotFound else None)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "location")}
    return json_response(error_body(error), status=exc.status, headers=headers), error.code
