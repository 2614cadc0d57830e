"""JSON out, in the OpenAI wire format: bodies are encoded from their types
(:mod:`gateway.http.schemas`) by msgspec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from gateway.errors import GatewayError
from gateway.http.schemas.errors import error_envelope

__all__ = ["error_body", "json_response"]

_encode = msgspec.json.Encoder().encode


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``data`` (a body type, or plain JSON values) as a JSON response."""
    return web.Response(
        body=_encode(data), status=status, headers=headers, content_type="application/json"
    )


def error_body(error: GatewayError) -> dict[str, Any]:
    """``error``'s :class:`~gateway.http.schemas.errors.Error` body, as plain JSON values."""
    body: dict[str, Any] = msgspec.to_builtins(error_envelope(error))
    return body
