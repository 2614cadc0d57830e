"""Middlewares: request ids, the one place errors become responses, and response hygiene."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import errors
from gateway.http.responses import error_body, json_response

__all__ = ["REQUEST_ID", "request_context_middleware"]

log = logging.getLogger("gateway.access")

REQUEST_ID = web.RequestKey("request_id", str)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES: dict[int, type[errors.GatewayError]] = {
    400: errors.InvalidRequest,
    404: errors.NotFound,
    413: errors.PayloadTooLarge,
}


class _MethodNotAllowed(errors.GatewayError):
    status, code, type = 405, "method_not_allowed", "invalid_request_error"
    default_message = "This method is not allowed on this path."


def request_context_middleware() -> Middleware:
    """Give every request an id, turn every error into OpenAI-shaped JSON, log one line."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID")
        if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        try:
            response = await handler(request)
        except errors.GatewayError as exc:
            response = json_response(error_body(exc), status=exc.status, headers=exc.headers)
        except web.HTTPException as exc:
            response = _from_http_exception(exc)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = json_response(error_body(errors.GatewayError()), status=500)
        headers = response.headers
        headers["X-Request-ID"] = request_id
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Server"] = "image-gateway"
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %d %.1fms request_id=%s",
                request.method,
                request.path,
                response.status,
                (time.perf_counter() - started) * 1000,
                request_id,
            )
        return response

    return middleware


def _from_http_exception(exc: web.HTTPException) -> web.Response:
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
        error = cls(exc.reason if cls is errors.NotFound else None)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "location")}
    return json_response(error_body(error), status=exc.status, headers=headers)
