"""``Idempotency-Key`` on ``POST /v1/images/generations``, ``/v1/images/edits``,
``/v1/images/variations`` and ``/v1/images/jobs``.

A key (1-255 visible ASCII characters) is the calling user's for
``idempotency.ttl_hours``. The first request with it runs, and its final answer (status,
the headers that matter, body) is kept; a repeat of the same request (method, path, a
digest of the body; of a multipart form, of its parts' names, file names and values,
whatever the boundary) gets that answer again with ``Idempotent-Replayed: true``, without
calling an upstream or charging anything. A repeat while the first still runs is 409
``idempotency_key_in_use`` (with ``Retry-After``); the key with another request is 422
``idempotency_key_reused``. Answers of 5xx, 409 and 429 are not kept: the retry runs.

The handler itself checks for the header (a dict lookup), so requests without one pay
nothing more; with one, it calls :func:`idempotent`, which calls the handler again
marked (:data:`IDEMPOTENCY_TAKEN`) to run it for real.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from gateway import errors
from gateway.http.api_key_auth import authenticate
from gateway.http.body import read_body
from gateway.http.ratelimit_headers import RATE_LIMIT_HEADERS
from gateway.http.relay import ImagesResponse
from gateway.http.responses import error_body
from gateway.idempotency.store import Answer, fingerprint
from gateway.services import SERVICES

__all__ = ["HEADER", "IDEMPOTENCY_TAKEN", "idempotent"]

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
#: Set on a request whose key this process holds: the handler runs it for real.
IDEMPOTENCY_TAKEN = web.RequestKey("idempotency_taken", bool)
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: The headers a replay repeats. The rate-limit headers are the first answer's (a
#: replay costs nothing, so it reads no counter: they may be stale).
_KEPT_HEADERS = (
    "Content-Type",
    "Location",
    "Preference-Applied",
    "X-Gateway-Backend",
    "x-credits-remaining",
    *RATE_LIMIT_HEADERS,
)
_NOT_KEPT = frozenset({409, 429})
_encode = msgspec.json.Encoder().encode
_decode_headers = msgspec.json.Decoder(dict[str, str]).decode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What identifies a request's body: its bytes by default (:func:`idempotent`).
BodyOf = Callable[[web.Request], Awaitable[bytes]]


def _key_of(request: web.Request) -> str:
    values = request.headers.getall(HEADER)
    if len(values) != 1 or not _KEY.fullmatch(values[0]):
        raise errors.InvalidRequest(
            f"'{HEADER}' must be one value of 1 to 255 visible ASCII characters.",
            param=HEADER,
        )
    return values[0]


async def idempotent(
    request: web.Request, handler: Handler, body_of: BodyOf | None = None
) -> web.StreamResponse:
    """Run ``handler`` for ``request`` at most once per (user, Idempotency-Key).

    ``body_of`` reads what identifies the body (the handler must still find it: a
    multipart form is parsed once and kept on the request); by default the body itself.
    """
    services = request.app[SERVICES]
    config = services.config
    key = _key_of(request)
    record = await authenticate(request, services.keys, config.keys.prefix, services.wall_clock())
    if body_of is None:  # kept by aiohttp: the handler reads it too
        body = await read_body(request, config.server)
    else:
        body = await body_of(request)
    this_request = fingerprint(request.method, request.path, body)
    token = secrets.token_hex(8)
    store = services.idempotency
    try:
        holder = await store.begin(record.user_id, key, this_request, token)
    except Exception as exc:
        log.warning("idempotency keys unavailable: %s", exc)
        raise errors.ServiceUnavailable(
            "Idempotency keys are unavailable. Please retry shortly."
        ) from None
    if holder is not None:
        if holder.fingerprint != this_request:
            raise errors.IdempotencyKeyReused(param=HEADER)
        if holder.answer is None:
            raise errors.IdempotencyKeyInUse(param=HEADER, headers={"Retry-After": "1"})
        return _replay(holder.answer)

    request[IDEMPOTENCY_TAKEN] = True
    answer: Answer | None = None
    try:
        response = await handler(request)
        if response.status < 500 and response.status not in _NOT_KEPT:
            answer = _answer_of(response)
        return response
    except errors.GatewayError as exc:
        if exc.status < 500 and exc.status not in _NOT_KEPT:
            headers = {"Content-Type": "application/json"}
            answer = Answer(exc.status, _encode(headers), _encode(error_body(exc)))
        raise
    finally:
        # Shielded: a client gone mid-request must not leave the key taken.
        await asyncio.shield(_finish(request, record.user_id, key, token, answer))


async def _finish(
    request: web.Request, user_id: str, key: str, token: str, answer: Answer | None
) -> None:
    try:
        await request.app[SERVICES].idempotency.finish(user_id, key, token, answer)
    except Exception as exc:  # the key frees itself after idempotency.in_flight_seconds
        log.warning("could not record the answer for an idempotency key: %s", exc)


def _answer_of(response: web.StreamResponse) -> Answer | None:
    if isinstance(response, ImagesResponse):
        body: object = response.joined_body()  # kept whole, as a Response's body is
    else:
        body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes):
        return None  # a streamed answer is not kept: a retry runs again
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    return Answer(response.status, _encode(headers), body)


def _replay(answer: Answer) -> web.Response:
    headers = _decode_headers(answer.headers)
    headers["Idempotent-Replayed"] = "true"
    content_type = headers.pop("Content-Type", "application/json")
    return web.Response(
        status=answer.status, body=answer.body, headers=headers, content_type=content_type
    )
