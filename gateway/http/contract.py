"""The vocabulary of the route table: an operation, what it answers, how it fails.

:mod:`gateway.http.operations` declares every operation once with these; the router
(:mod:`gateway.http.routes`) and the API description (:mod:`gateway.http.openapi`) both
read that table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from aiohttp.typedefs import Handler

from gateway import errors
from gateway.config import Config
from gateway.http.schemas.base import RequestBody

__all__ = [
    "ACCOUNT_DISABLED",
    "ADMIN_NOT_FOUND",
    "API_KEY_UNAUTHORIZED",
    "CREDENTIALS_UNAUTHORIZED",
    "INVALID_REQUEST",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "REQUEST_TIMEOUT",
    "SERVICE_UNAVAILABLE",
    "THROTTLED",
    "TOKEN_UNAUTHORIZED",
    "Answer",
    "Auth",
    "DocFacts",
    "Failure",
    "Operation",
    "Param",
]


@dataclass(frozen=True, slots=True)
class DocFacts:
    """What the API description takes from the running gateway."""

    config: Config
    #: A size the default model's backend supports, for examples.
    example_size: str


T = TypeVar("T")
#: A value for the API description, or how to make it from the gateway's config.
Documented: TypeAlias = T | Callable[[DocFacts], T]


class Auth(enum.Enum):
    """Who may call an operation; the handler itself authenticates."""

    API_KEY = enum.auto()
    ACCESS_TOKEN = enum.auto()
    ADMIN_TOKEN = enum.auto()
    #: Either an API key or an access token (``/v1/credits``): both name a user.
    API_KEY_OR_TOKEN = enum.auto()
    NONE = enum.auto()


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: its status and body type (``None``: no body)."""

    status: int
    description: str
    schema: type[Any] | None = None
    example: Documented[Any] = None
    #: Header names documented under ``components/headers``, besides ``X-Request-ID``.
    headers: tuple[str, ...] = ()
    media_type: str = "application/json"
    #: A JSON Schema for a body that has no type (Prometheus text, this document).
    raw_schema: Mapping[str, Any] | None = None
    #: A ``text/event-stream`` body: each event's name and the type of its JSON ``data``.
    #: Documented beside the answer of the same status, if there is one.
    events: tuple[tuple[str, type[Any]], ...] = ()
    #: Further media types the same body may come as (the request chooses).
    other_media_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """An error answer: one status, the :mod:`gateway.errors` kinds it carries."""

    status: int
    kinds: tuple[type[errors.GatewayError], ...]
    description: Documented[str]
    headers: tuple[str, ...] = ()
    #: The ``param`` its examples show.
    param: str | None = None
    #: Answers many operations give are described once, under this name.
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    location: str  # "query" or "path"
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path, declared once: the router serves it, the API
    description documents it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    tag: str
    summary: str
    auth: Auth
    answers: tuple[Answer, ...]
    #: Besides those its auth and its body bring (see :meth:`all_failures`).
    failures: tuple[Failure, ...] = ()
    body: type[RequestBody] | None = None
    #: How the body is sent: JSON, or ``multipart/form-data`` (file fields: binary).
    body_media_type: str = "application/json"
    body_required: bool = True
    body_example: Documented[Any] = None
    parameters: tuple[Param, ...] = ()
    description: str | None = None

    def all_failures(self) -> dict[int, Failure]:
        """Every error answer by status: its auth's, its body's, then its own."""
        found: dict[int, Failure] = {}
        for failure in (*_AUTH_FAILURES[self.auth], *self._body_failures(), *self.failures):
            found[failure.status] = failure
        return dict(sorted(found.items()))

    def _body_failures(self) -> tuple[Failure, ...]:
        if self.body is None:
            return ()
        return (INVALID_REQUEST, PAYLOAD_TOO_LARGE, REQUEST_TIMEOUT)


INVALID_REQUEST = Failure(
    400,
    (errors.InvalidRequest,),
    "A bad field (`param` names it), a body that is not a JSON object, or an API key in the URL.",
    param="prompt",
    name="InvalidRequest",
)
API_KEY_UNAUTHORIZED = Failure(
    401,
    (errors.MissingApiKey, errors.InvalidApiKey, errors.ApiKeyRevoked, errors.ApiKeyExpired),
    "The API key is missing, malformed, unknown, revoked or expired.",
    name="ApiKeyUnauthorized",
)
TOKEN_UNAUTHORIZED = Failure(
    401,
    (errors.InvalidToken,),
    "The bearer token is missing, forged, expired or malformed.",
    name="TokenUnauthorized",
)
ACCOUNT_DISABLED = Failure(
    403,
    (errors.AccountDisabled,),
    "The account (the key's owner, or the token's user) is disabled.",
    name="AccountDisabled",
)
NOT_FOUND = Failure(
    404,
    (errors.NotFound,),
    "No such resource (an id that is not a UUID is not found either).",
    name="NotFound",
)
ADMIN_NOT_FOUND = Failure(
    404,
    (errors.NotFound,),
    "No such resource, or the admin API is off (`admin.token` unset).",
    name="AdminNotFound",
)
PAYLOAD_TOO_LARGE = Failure(
    413,
    (errors.PayloadTooLarge,),
    "The body is over `server.max_body_bytes` (checked before it is read).",
    name="PayloadTooLarge",
)
REQUEST_TIMEOUT = Failure(
    408,
    (errors.RequestTimeout,),
    "The body did not arrive within `server.body_read_timeout_seconds`.",
    name="RequestTimeout",
)
THROTTLED = Failure(
    429,
    (errors.RateLimitExceeded,),
    "Too many attempts from this client IP in the last minute, or (login) too many failed"
    " logins for this account: wait `Retry-After` seconds.",
    headers=("Retry-After",),
    name="Throttled",
)
SERVICE_UNAVAILABLE = Failure(
    503,
    (errors.ServiceUnavailable,),
    "Redis or the key store is unreachable: the gateway fails closed.",
    name="ServiceUnavailable",
)

CREDENTIALS_UNAUTHORIZED = Failure(
    401,
    (*API_KEY_UNAUTHORIZED.kinds, *TOKEN_UNAUTHORIZED.kinds),
    "The API key or access token is missing, unknown, revoked, expired or malformed.",
    name="CredentialsUnauthorized",
)

_AUTH_FAILURES: dict[Auth, tuple[Failure, ...]] = {
    # A key in the URL is a 400; an unreachable key store a 503.
    Auth.API_KEY: (INVALID_REQUEST, API_KEY_UNAUTHORIZED, ACCOUNT_DISABLED, SERVICE_UNAVAILABLE),
    Auth.ACCESS_TOKEN: (TOKEN_UNAUTHORIZED, ACCOUNT_DISABLED),
    Auth.ADMIN_TOKEN: (TOKEN_UNAUTHORIZED, ADMIN_NOT_FOUND),
    Auth.API_KEY_OR_TOKEN: (
        INVALID_REQUEST,
        CREDENTIALS_UNAUTHORIZED,
        ACCOUNT_DISABLED,
        SERVICE_UNAVAILABLE,
    ),
    Auth.NONE: (),
}
