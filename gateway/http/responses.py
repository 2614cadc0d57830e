"""JSON in and out, in the OpenAI wire format."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.config import ServerConfig
from gateway.errors import (
    ClientClosedRequest,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
)

__all__ = ["error_body", "json_response", "read_json_object"]


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def error_body(error: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


async def read_json_object(request: web.Request, server: ServerConfig) -> dict[str, Any]:
    """The request body as a JSON object: 413 past ``server.max_body_bytes``, 408 if it
    takes longer than ``server.body_read_timeout_seconds`` to arrive, 400 if the client
    goes away first or if it is not a JSON object."""
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body must be at most {limit} bytes.")
    try:
        if request.content.is_eof():  # all of it is here already: nothing to wait for
            raw = await request.read()
        else:
            async with asyncio.timeout(server.body_read_timeout_seconds):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"The request body must be at most {limit} bytes.") from None
    except TimeoutError:
        raise RequestTimeout() from None
    except (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError):
        raise ClientClosedRequest() from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object "
            "with 'Content-Type: application/json'."
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body
