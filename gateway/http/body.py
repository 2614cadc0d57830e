"""Request bodies in: read the bytes, decode them straight into a typed body.

One step validates a body against its type (:mod:`gateway.http.schemas`); a violation
is a 400 ``invalid_request`` whose ``param`` names the field as the client sent it
(``n``, ``metadata.owner``, ``image[1]``) and whose message says what is allowed.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping
from typing import TypeVar

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.config import ServerConfig
from gateway.errors import ClientClosedRequest, InvalidRequest, PayloadTooLarge, RequestTimeout
from gateway.http.schemas.base import RequestBody
from gateway.http.validate import refuse_nul

__all__ = ["convert", "decode", "decode_body", "read_body"]

Body = TypeVar("Body", bound=RequestBody)

NOT_JSON = (
    "We could not parse the JSON body of your request. Send a JSON object "
    "with 'Content-Type: application/json'."
)
NOT_AN_OBJECT = "The request body must be a JSON object."

# msgspec's messages: "Expected `int` >= 1 - at `$.n`", "Object missing required field
# `prompt`" (at the top level, no "at").
_AT = re.compile(r"(?s)(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]*)`")


async def read_body(request: web.Request, server: ServerConfig) -> bytes:
    """The request body's bytes: 413 past ``server.max_body_bytes``, 408 if it takes
    longer than ``server.body_read_timeout_seconds`` to arrive, 400 if the client goes
    away first."""
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body must be at most {limit} bytes.")
    try:
        if request.content.is_eof():  # all of it is here already: nothing to wait for
            return await request.read()
        async with asyncio.timeout(server.body_read_timeout_seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"The request body must be at most {limit} bytes.") from None
    except TimeoutError:
        raise RequestTimeout() from None
    except (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError):
        raise ClientClosedRequest() from None


async def decode_body(
    request: web.Request,
    schema: type[Body],
    server: ServerConfig,
    context: Mapping[str, object] | None = None,
) -> Body:
    """The request's body as a ``schema``, validated; see :func:`decode`."""
    return decode(await read_body(request, server), schema, context)


@functools.cache
def _decoder(schema: type[Body]) -> msgspec.json.Decoder[Body]:
    return msgspec.json.Decoder(schema)


def decode(raw: bytes, schema: type[Body], context: Mapping[str, object] | None = None) -> Body:
    """``raw`` JSON decoded into a ``schema``; raises the 400 ``InvalidRequest``.

    ``context`` fills the placeholders of ``schema.messages`` (``{most}``).
    """
    decoder: msgspec.json.Decoder[Body] = _decoder(schema)
    try:
        body = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc), schema, context or {}) from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest(NOT_JSON) from None
    return _kept_text_checked(body)


def convert(
    fields: Mapping[str, object], schema: type[Body], context: Mapping[str, object] | None = None
) -> Body:
    """A form's ``fields`` (strings, or lists of them) as a ``schema``, validated, strings
    read as the numbers and booleans the type wants; raises the 400 ``InvalidRequest``
    as :func:`decode` does."""
    try:
        body = msgspec.convert(fields, schema, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc), schema, context or {}) from None
    return _kept_text_checked(body)


def _kept_text_checked(body: Body) -> Body:
    """``body``, unless a field it keeps in Postgres holds a NUL (a 400 naming it)."""
    for name in body.stored_text:
        refuse_nul(getattr(body, name), name, named=body.names_field)
    return body


def _invalid(text: str, schema: type[RequestBody], context: Mapping[str, object]) -> InvalidRequest:
    match = _AT.fullmatch(text)
    what, path = (match["what"], match["path"] or "") if match else (text, "")
    missing = _MISSING.fullmatch(what)
    if missing:
        path = f"{path}.{missing['name']}"
    if not path:
        return InvalidRequest(NOT_AN_OBJECT)  # the top level is not an object
    if what == "Number out of range":  # beyond a double: not JSON we can read
        return InvalidRequest(NOT_JSON)
    param = _param(path)
    kind = "too_long" if "length <=" in what else "invalid"
    template = schema.messages.get(f"{param}:{kind}") or schema.messages.get(param)
    if template is not None:
        message = template.format_map(context)
    elif missing:
        message = f"'{param}' is required."
    else:
        message = f"'{param}' is not valid: {what.replace('`', '')}."
    return InvalidRequest(message, param=param if schema.names_field else None)


def _param(path: str) -> str:
    """``$``-less msgspec path (``.metadata.owner``, ``.image[1]``) as the client wrote it.

    A value in a mapping (msgspec says ``.metadata[...]``, not which) is blamed on the
    mapping (``metadata``)."""
    return path.removeprefix(".").replace("[...]", "")
