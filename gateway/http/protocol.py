"""Answers to requests that never reach the app: malformed HTTP, caught by aiohttp's parser.

aiohttp answers those itself, in text/plain that can echo the offending bytes, and logs
them, raw bytes (and so any API key in them) included. :class:`GatewayRequestHandler`
answers in the gateway's own JSON error shape with its usual headers, and logs only the
kind of error.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from aiohttp import web, web_server
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway import errors
from gateway.http.responses import error_body

__all__ = ["GatewayRequestHandler", "install"]

log = logging.getLogger("gateway.protocol")


class _Malformed(errors.GatewayError):
    code, type = "invalid_request", "invalid_request_error"
    default_message = "The HTTP request is malformed."


class GatewayRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error(
                "error handling a request from %s (%s)",
                request.remote,
                type(exc).__name__ if exc else "unknown",
            )
            error: errors.GatewayError = errors.GatewayError()
        else:
            log.info(
                "rejected a malformed request from %s (%s)",
                request.remote,
                type(exc).__name__ if exc else "unknown",
            )
            error = _Malformed(f"The HTTP request is malformed ({HTTPStatus(status).phrase}).")
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already under way")
        response = web.Response(
            status=status,
            body=orjson.dumps(error_body(error)),
            content_type="application/json",
            headers={"X-Content-Type-Options": "nosniff", "Server": "image-gateway"},
        )
        response.force_close()
        return response


def install() -> None:
    """Make this process's aiohttp servers use :class:`GatewayRequestHandler`."""
    web_server.RequestHandler = GatewayRequestHandler  # type: ignore[attr-defined]
