"""The API description: an OpenAPI 3.1 document, ``GET /openapi.json`` and ``GET /docs``.

:func:`build_openapi` turns the app's config (key prefix, model names, plans) into the
document, with no I/O. Limits come from the views that enforce them and error examples
from :mod:`gateway.errors`, so the numbers, codes, types and messages the document shows
are the ones the gateway uses.
``GET /docs`` is a self-contained page (``static/``): it fetches ``openapi.json`` from
this gateway and loads nothing from anywhere else, as its Content-Security-Policy says.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import __version__, errors
from gateway.config import Config
from gateway.http.accounts import MAX_PASSWORD, MIN_PASSWORD
from gateway.http.admin import MAX_LIMIT
from gateway.http.images import MAX_PROMPT_CHARS, MAX_SEED
from gateway.http.keys_api import MAX_GRACE_SECONDS
from gateway.http.usage_api import MAX_DAYS as MAX_USAGE_DAYS
from gateway.services import CONFIG, SERVICES

__all__ = ["DOCS_CSP", "DOCS_STATIC_DIR", "build_openapi", "docs_page", "openapi_json"]

JSON = dict[str, Any]

DOCS_STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The docs page runs only its own script and style, and talks only to its own origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: ``text_field``'s default, which ``POST /v1/keys`` uses for ``name``.
MAX_KEY_NAME = 100
_ERROR_TYPES = (
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "rate_limit_error",
    "server_error",
)


def _ref(kind: str, name: str) -> JSON:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> JSON:
    return _ref("schemas", name)


def _nullable(schema: JSON) -> JSON:
    return {**schema, "type": [schema["type"], "null"]}


_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_DATE = {"type": "string", "format": "date"}
_COUNT = {"type": "integer", "minimum": 0}


def _object(properties: JSON, required: Sequence[str] = (), **extra: Any) -> JSON:
    schema: JSON = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {**schema, **extra}


def _json_body(schema: JSON, example: Any, *, required: bool = True) -> JSON:
    return {
        "required": required,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


# -- errors ----------------------------------------------------------------------------


def _error_example(kind: type[errors.GatewayError], param: str | None = None) -> JSON:
    return {
        "error": {
            "message": kind.default_message,
            "type": kind.type,
            "param": param,
            "code": kind.code,
        }
    }


def _error_response(
    description: str,
    *kinds: type[errors.GatewayError],
    headers: Mapping[str, JSON] | None = None,
    param: str | None = None,
) -> JSON:
    """A response whose body is an :data:`Error` with one of ``kinds``' codes."""
    schema = {
        "allOf": [
            _schema("Error"),
            _object(
                {
                    "error": _object(
                        {
                            "code": {"enum": [kind.code for kind in kinds]},
                            "type": {"enum": sorted({kind.type for kind in kinds})},
                        }
                    )
                }
            ),
        ]
    }
    examples = {
        kind.code: {"summary": kind.code, "value": _error_example(kind, param)} for kind in kinds
    }
    return {
        "description": description,
        "headers": {"X-Request-ID": _ref("headers", "X-Request-ID"), **(headers or {})},
        "content": {"application/json": {"schema": schema, "examples": examples}},
    }


_RATE_LIMIT_HEADERS = (
    "RateLimit-Policy",
    "RateLimit",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-images",
    "x-ratelimit-remaining-images",
    "x-ratelimit-reset-images",
)


def _with_headers(*names: str) -> dict[str, JSON]:
    return {name: _ref("headers", name) for name in names}


def _responses_components() -> JSON:
    return {
        "InvalidRequest": _error_response(
            "A bad field (`param` names it), a body that is not a JSON object, or an API"
            " key in the URL.",
            errors.InvalidRequest,
            param="prompt",
        ),
        "ApiKeyUnauthorized": _error_response(
            "The API key is missing, malformed, unknown, revoked or expired.",
            errors.MissingApiKey,
            errors.InvalidApiKey,
            errors.ApiKeyRevoked,
            errors.ApiKeyExpired,
        ),
        "TokenUnauthorized": _error_response(
            "The bearer token is missing, forged, expired or malformed.", errors.InvalidToken
        ),
        "AccountDisabled": _error_response(
            "The account (the key's owner, or the token's user) is disabled.",
            errors.AccountDisabled,
        ),
        "NotFound": _error_response(
            "No such resource (an id that is not a UUID is not found either).", errors.NotFound
        ),
        "AdminNotFound": _error_response(
            "No such resource, or the admin API is off (`admin.token` unset).",
            errors.NotFound,
        ),
        "PayloadTooLarge": _error_response(
            "The body is over `server.max_body_bytes` (checked before it is read).",
            errors.PayloadTooLarge,
        ),
        "RequestTimeout": _error_response(
            "The body did not arrive within `server.body_read_timeout_seconds`.",
            errors.RequestTimeout,
        ),
        "Throttled": _error_response(
            "Too many attempts from this client IP in the last minute, or (login) too many"
            " failed logins for this account: wait `Retry-After` seconds.",
            errors.RateLimitExceeded,
            headers=_with_headers("Retry-After"),
        ),
        "ServiceUnavailable": _error_response(
            "Redis or the key store is unreachable: the gateway fails closed.",
            errors.ServiceUnavailable,
        ),
    }


def _headers_components() -> JSON:
    def header(description: str, schema: JSON, example: str) -> JSON:
        # Each header is documented only on the responses that always carry it.
        return {"description": description, "required": True, "schema": schema, "example": example}

    number = {"type": "string", "pattern": "^[0-9]+$"}
    duration = {"type": "string", "pattern": "^(?:[0-9]+h[0-9]+m|[0-9]+m)?[0-9]+s$"}
    return {
        "X-Request-ID": header(
            "The request's id: a sane incoming `X-Request-ID` (up to 128 of"
            " `A-Za-z0-9._:-`) is echoed, else one is made. On every response.",
            {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
            "3f2a9c1e6b0d4e8f9a7c5b3d1e0f2a4c",
        ),
        "Retry-After": header(
            "Seconds until a retry can succeed: until the rate window has room, or (daily"
            " quota) until the next UTC midnight.",
            {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "17",
        ),
        "RateLimit-Policy": header(
            "The key's two policies (draft-ietf-httpapi-ratelimit-headers-10): requests"
            " per rolling 60 s and images per UTC day.",
            {
                "type": "string",
                "pattern": '^"requests";q=[0-9]+;w=60, "images";q=[0-9]+;w=86400$',
            },
            '"requests";q=10;w=60, "images";q=50;w=86400',
        ),
        "RateLimit": header(
            "What is left of each policy (`r`) and seconds until it resets (`t`).",
            {
                "type": "string",
                "pattern": '^"requests";r=[0-9]+;t=[0-9]+, "images";r=[0-9]+;t=[0-9]+$',
            },
            '"requests";r=9;t=60, "images";r=47;t=10563',
        ),
        "x-ratelimit-limit-requests": header(
            "Requests allowed in any 60 seconds (OpenAI's header).", number, "10"
        ),
        "x-ratelimit-remaining-requests": header(
            "Requests left in the current window.", number, "9"
        ),
        "x-ratelimit-reset-requests": header(
            "Time until the window has room for one more request.", duration, "59s"
        ),
        "x-ratelimit-limit-images": header("Images allowed per UTC day.", number, "50"),
        "x-ratelimit-remaining-images": header("Images left today.", number, "47"),
        "x-ratelimit-reset-images": header(
            "Time until the daily quota resets (UTC midnight).", duration, "3h2m1s"
        ),
    }


# -- schemas ---------------------------------------------------------------------------


def _schemas_components(
    config: Config, model_sizes: Mapping[str, Sequence[str]]
) -> dict[str, JSON]:
    most_images = max(plan.max_images_per_request for plan in config.plans.values())
    per_plan = ", ".join(f"{k}: {p.max_images_per_request}" for k, p in config.plans.items())
    sizes = sorted({s for names in model_sizes.values() for s in names}) or ["1024x1024"]
    key_pattern = f"^{re.escape(config.keys.prefix)}[0-9A-Za-z]{{38}}$"
    key_fields: JSON = {
        "id": _UUID,
        "name": {"type": "string"},
        "prefix": {"type": "string", "description": "A short display form, never the key."},
        "is_active": {"type": "boolean"},
        "created_at": _TIME,
        "last_used_at": _nullable(_TIME),
        "expires_at": _nullable(_TIME),
    }
    user_fields: JSON = {
        "id": _UUID,
        "email": {"type": "string"},
        "plan": {"type": "string", "enum": list(config.plans)},
        "is_active": {"type": "boolean"},
        "created_at": _TIME,
    }
    admin_user = _object({**user_fields, "updated_at": _TIME}, [*user_fields, "updated_at"])
    size_lines = "; ".join(f"`{m}`: {', '.join(s)}" for m, s in model_sizes.items())
    return {
        "Error": _object(
            {
                "error": _object(
                    {
                        "message": {"type": "string", "minLength": 1},
                        "type": {"type": "string", "enum": list(_ERROR_TYPES)},
                        "param": {
                            "type": ["string", "null"],
                            "description": "The request field at fault, if one is.",
                        },
                        "code": {"type": "string"},
                    },
                    ["message", "type", "param", "code"],
                    additionalProperties=False,
                )
            },
            ["error"],
            description="Every error, in OpenAI's shape.",
        ),
        "GenerationRequest": _object(
            {
                "prompt": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_PROMPT_CHARS,
                    "pattern": r"\S",
                    "description": "What to draw; not only white space.",
                },
                "n": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": most_images,
                    "default": 1,
                    "description": "Images to make: 1 to the plan's `max_images_per_request`"
                    f" ({per_plan}).",
                },
                "size": {
                    "type": ["string", "null"],
                    "pattern": "^[0-9]+x[0-9]+$",
                    "default": "1024x1024",
                    "examples": sizes,
                    "description": "`WIDTHxHEIGHT`, one the model's backend supports"
                    + (f" ({size_lines})." if size_lines else "."),
                },
                "model": {
                    "type": ["string", "null"],
                    "enum": [*config.models, None],
                    "default": config.default_model,
                    "description": "Any other name is 404 `model_not_found`.",
                },
                "response_format": {
                    "type": ["string", "null"],
                    "enum": ["b64_json", None],
                    "default": "b64_json",
                    "description": "Only `b64_json`; `url` is refused.",
                },
                "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED},
                "negative_prompt": {"type": ["string", "null"], "maxLength": MAX_PROMPT_CHARS},
            },
            ["prompt"],
            description="OpenAI's Images API request; unknown fields are ignored.",
        ),
        "GenerationResponse": _object(
            {
                "created": {"type": "integer", "description": "Unix time."},
                "model": {"type": "string"},
                "data": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "b64_json": {
                                "type": "string",
                                "contentEncoding": "base64",
                                "contentMediaType": "image/png",
                            },
                            "revised_prompt": {"type": ["string", "null"]},
                        },
                        ["b64_json", "revised_prompt"],
                    ),
                },
                "usage": _object(
                    {"images": {"type": "integer", "minimum": 1, "description": "Charged."}},
                    ["images"],
                ),
            },
            ["created", "model", "data", "usage"],
        ),
        "ModelList": _object(
            {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": _object(
                        {
                            "id": {"type": "string", "enum": list(config.models)},
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string"},
                            "backends": {"type": "array", "items": {"type": "string"}},
                            "sizes": {"type": "array", "items": {"type": "string"}},
                        },
                        ["id", "object", "created", "owned_by", "backends", "sizes"],
                    ),
                },
            },
            ["object", "data"],
        ),
        "Credentials": _object(
            {
                "email": {
                    "type": "string",
                    "format": "email",
                    "maxLength": 254,
                    "pattern": r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$",
                    "description": "Trimmed and lower-cased.",
                },
                "password": {
                    "type": "string",
                    "minLength": MIN_PASSWORD,
                    "maxLength": MAX_PASSWORD,
                },
            },
            ["email", "password"],
        ),
        "Login": _object(
            {"email": {"type": "string"}, "password": {"type": "string"}},
            ["email", "password"],
            description="Any strings: a wrong email or password is a 401, not a 400.",
        ),
        "User": _object(user_fields, ["id", "email", "plan", "created_at"]),
        "Token": _object(
            {
                "access_token": {"type": "string"},
                "token_type": {"const": "bearer"},
                "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds."},
            },
            ["access_token", "token_type", "expires_in"],
        ),
        "Me": _object(
            {
                **user_fields,
                "limits": _object(
                    {
                        "requests_per_minute": _COUNT,
                        "images_per_day": _COUNT,
                        "max_images_per_request": _COUNT,
                    },
                    ["requests_per_minute", "images_per_day", "max_images_per_request"],
                ),
                "usage": _object({"today": _COUNT}, ["today"]),
            },
            [*user_fields, "limits", "usage"],
        ),
        "NewKey": _object(
            {
                "name": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_NAME},
                "expires_at": {
                    **_nullable(_TIME),
                    "description": "In the future, with a time zone.",
                },
            },
            ["name"],
        ),
        "Rotation": _object(
            {
                "grace_seconds": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": MAX_GRACE_SECONDS,
                    "default": 0,
                    "description": "How long the old key keeps working.",
                }
            }
        ),
        "Key": _object(key_fields, list(key_fields)),
        "CreatedKey": _object(
            {
                "id": _UUID,
                "name": {"type": "string"},
                "key": {
                    "type": "string",
                    "pattern": key_pattern,
                    "description": "The whole key: shown this once, never again.",
                },
                "prefix": {"type": "string"},
                "created_at": _TIME,
                "expires_at": _nullable(_TIME),
            },
            ["id", "name", "key", "prefix", "created_at", "expires_at"],
        ),
        "KeyList": _object({"data": {"type": "array", "items": _schema("Key")}}, ["data"]),
        "Usage": _object(
            {
                "data": {
                    "type": "array",
                    "items": _object(
                        {"date": _DATE, "api_key_id": _UUID, "images": _COUNT},
                        ["date", "api_key_id", "images"],
                    ),
                },
                "total": _COUNT,
            },
            ["data", "total"],
        ),
        "AdminUser": admin_user,
        "AdminUserList": _object(
            {"data": {"type": "array", "items": _schema("AdminUser")}}, ["data"]
        ),
        "AdminUserDetail": {
            "allOf": [
                _schema("AdminUser"),
                _object(
                    {
                        "keys": {"type": "array", "items": _schema("Key")},
                        "usage_today": _COUNT,
                    },
                    ["keys", "usage_today"],
                ),
            ]
        },
        "AdminUserChange": _object(
            {
                "plan": {"type": "string", "enum": list(config.plans)},
                "is_active": {"type": "boolean"},
            },
            anyOf=[{"required": ["plan"]}, {"required": ["is_active"]}],
        ),
        "AdminKeyChange": _object(
            {
                "requests_per_minute": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": MAX_LIMIT,
                    "description": "`null` clears the override (the plan's limit applies).",
                },
                "images_per_day": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": MAX_LIMIT,
                    "description": "`null` clears the override (the plan's limit applies).",
                },
                "is_active": {"type": "boolean"},
            },
            anyOf=[
                {"required": ["requests_per_minute"]},
                {"required": ["images_per_day"]},
                {"required": ["is_active"]},
            ],
        ),
        "AdminKey": {
            "allOf": [
                _schema("Key"),
                _object(
                    {
                        "user_id": _UUID,
                        "requests_per_minute": {"type": ["integer", "null"]},
                        "images_per_day": {"type": ["integer", "null"]},
                    },
                    ["user_id", "requests_per_minute", "images_per_day"],
                ),
            ]
        },
        "AdminUsage": _object(
            {
                "date": _DATE,
                "users": {
                    "type": "array",
                    "items": _object(
                        {"user_id": _UUID, "email": {"type": "string"}, "images": _COUNT},
                        ["user_id", "email", "images"],
                    ),
                },
                "keys": {
                    "type": "array",
                    "items": _object(
                        {"api_key_id": _UUID, "user_id": _UUID, "images": _COUNT},
                        ["api_key_id", "user_id", "images"],
                    ),
                },
                "total": _COUNT,
            },
            ["date", "users", "keys", "total"],
        ),
        "Health": _object({"status": {"const": "ok"}}, ["status"]),
        "Readiness": _object(
            {
                "status": {"const": "ready"},
                "checks": _object(
                    {"postgres": {"const": "ok"}, "redis": {"const": "ok"}},
                    ["postgres", "redis"],
                ),
            },
            ["status", "checks"],
        ),
        "NotReady": {
            "allOf": [
                _schema("Error"),
                _object(
                    {
                        "status": {"enum": ["unavailable", "draining"]},
                        "checks": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "`ok`, or `unreachable: <error>`; absent when draining.",
                        },
                    },
                    ["status"],
                ),
            ]
        },
    }


# -- operations ------------------------------------------------------------------------


def _ok(description: str, schema: JSON, example: Any = None, **headers: JSON) -> JSON:
    content: JSON = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {
        "description": description,
        "headers": {"X-Request-ID": _ref("headers", "X-Request-ID"), **headers},
        "content": {"application/json": content},
    }


def _errors(*names: str) -> dict[str, JSON]:
    statuses = {
        "InvalidRequest": "400",
        "ApiKeyUnauthorized": "401",
        "TokenUnauthorized": "401",
        "AccountDisabled": "403",
        "NotFound": "404",
        "AdminNotFound": "404",
        "PayloadTooLarge": "413",
        "RequestTimeout": "408",
        "Throttled": "429",
        "ServiceUnavailable": "503",
    }
    return {statuses[name]: _ref("responses", name) for name in names}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: JSON,
    *,
    security: list[JSON],
    description: str | None = None,
    body: JSON | None = None,
    parameters: list[JSON] | None = None,
) -> JSON:
    op: JSON = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "security": security,
        "parameters": [_ref("parameters", "X-Request-ID"), *(parameters or [])],
        "responses": dict(sorted(responses.items())),
    }
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = body
    return op


def _generation_operation(operation_id: str, config: Config, size: str, alias: bool) -> JSON:
    too_many = _error_response(
        "Over the key's rate limit (requests in any 60 s) or its daily image quota.",
        errors.RateLimitExceeded,
        errors.DailyQuotaExceeded,
        headers=_with_headers(*_RATE_LIMIT_HEADERS, "Retry-After"),
    )
    return _operation(
        operation_id,
        "images",
        "Generate images" + (" (an alias of /v1/images/generations)" if alias else ""),
        {
            "200": _ok(
                "The images, base64 PNG. Only images delivered are charged.",
                _schema("GenerationResponse"),
                {
                    "created": 1767225600,
                    "model": config.default_model,
                    "data": [{"b64_json": "iVBORw0KGgo=", "revised_prompt": None}],
                    "usage": {"images": 1},
                },
                **_with_headers(*_RATE_LIMIT_HEADERS),
            ),
            **_errors(
                "InvalidRequest",
                "ApiKeyUnauthorized",
                "AccountDisabled",
                "PayloadTooLarge",
                "RequestTimeout",
                "ServiceUnavailable",
            ),
            "404": _error_response(
                "The model is not one of `GET /v1/models`.", errors.ModelNotFound, param="model"
            ),
            "429": too_many,
            "502": _error_response(
                "The backend failed or sent something malformed; nothing is charged.",
                errors.UpstreamError,
            ),
            "504": _error_response(
                "The backend passed its `timeout_seconds`; nothing is charged.",
                errors.UpstreamTimeout,
            ),
        },
        security=[{"apiKey": []}, {"apiKeyHeader": []}],
        description="OpenAI's Images API: the official SDKs work unchanged. The key's rate"
        " limit and daily quota are checked and the images reserved in one atomic step;"
        " the rate-limit headers come with every 200 and 429.",
        body=_json_body(
            _schema("GenerationRequest"), {"prompt": "a lighthouse at dawn", "n": 1, "size": size}
        ),
    )


def _paths(config: Config, size: str) -> JSON:
    api_key: list[JSON] = [{"apiKey": []}, {"apiKeyHeader": []}]
    token: list[JSON] = [{"accessToken": []}]
    admin: list[JSON] = [{"adminToken": []}]
    id_param = [_ref("parameters", "id")]
    user = _schema("User")
    created_key = _ok(
        "The new key: the only time it is shown whole.",
        _schema("CreatedKey"),
        {
            "id": "0b7e6f1c-3d2a-4e59-8c1b-2f4a6d8e9c01",
            "name": "laptop",
            "key": f"{config.keys.prefix}Xq3Z9pLm2Rt7Vw4Ks8Dn1Bc6Fh0Jg5Ya7Ue2Qo",
            "prefix": f"{config.keys.prefix}Xq3Z...e2Qo",
            "created_at": "2026-01-01T12:00:00+00:00",
            "expires_at": None,
        },
    )
    no_content = {
        "description": "Revoked.",
        "headers": {"X-Request-ID": _ref("headers", "X-Request-ID")},
    }
    email_query = {
        "name": "email",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "Find one user by email; without it, the first 100 users.",
    }
    return {
        "/v1/images/generations": {
            "post": _generation_operation("createImage", config, size, alias=False)
        },
        "/v1/generate": {"post": _generation_operation("generate", config, size, alias=True)},
        "/v1/models": {
            "get": _operation(
                "listModels",
                "images",
                "The model names clients may send",
                {
                    "200": _ok("The models.", _schema("ModelList")),
                    **_errors(
                        "InvalidRequest",
                        "ApiKeyUnauthorized",
                        "AccountDisabled",
                        "ServiceUnavailable",
                    ),
                },
                security=api_key,
            )
        },
        "/v1/auth/register": {
            "post": _operation(
                "register",
                "accounts",
                "Create an account",
                {
                    "201": _ok(
                        "The new user, on the default plan.",
                        user,
                        {
                            "id": "6a1f3c9e-2b7d-4f80-a5c4-1e9d8b7c6a50",
                            "email": "ada@example.com",
                            "plan": config.default_plan,
                            "created_at": "2026-01-01T12:00:00+00:00",
                        },
                    ),
                    **_errors("InvalidRequest", "PayloadTooLarge", "RequestTimeout", "Throttled"),
                    "409": _error_response("An account with this email exists.", errors.EmailTaken),
                },
                security=[],
                description="Limited per client IP (`auth.register_per_minute_per_ip`).",
                body=_json_body(
                    _schema("Credentials"),
                    {"email": "ada@example.com", "password": "correct horse battery"},
                ),
            )
        },
        "/v1/auth/login": {
            "post": _operation(
                "login",
                "accounts",
                "Get an access token",
                {
                    "200": _ok(
                        "A bearer access token (JWT).",
                        _schema("Token"),
                        {
                            "access_token": "eyJhbGciOiJIUzI1NiIsImtpZCI6Ii4uLiJ9.e30.c2ln",
                            "token_type": "bearer",
                            "expires_in": config.auth.token_ttl_seconds,
                        },
                    ),
                    **_errors(
                        "InvalidRequest",
                        "AccountDisabled",
                        "PayloadTooLarge",
                        "RequestTimeout",
                        "Throttled",
                    ),
                    "401": _error_response(
                        "Unknown email or wrong password (the same answer, in the same time).",
                        errors.InvalidCredentials,
                    ),
                },
                security=[],
                description="Limited per client IP and, after repeated failures, per account"
                " (1 s, 2 s, 4 s ... between attempts).",
                body=_json_body(
                    _schema("Login"),
                    {"email": "ada@example.com", "password": "correct horse battery"},
                ),
            )
        },
        "/v1/me": {
            "get": _operation(
                "me",
                "accounts",
                "The caller's account, its plan's limits and today's usage",
                {
                    "200": _ok("The account.", _schema("Me")),
                    **_errors("TokenUnauthorized", "AccountDisabled"),
                },
                security=token,
            )
        },
        "/v1/keys": {
            "get": _operation(
                "listKeys",
                "keys",
                "The caller's API keys (never the keys themselves)",
                {
                    "200": _ok("The keys.", _schema("KeyList")),
                    **_errors("TokenUnauthorized", "AccountDisabled"),
                },
                security=token,
            ),
            "post": _operation(
                "createKey",
                "keys",
                "Create an API key",
                {
                    "201": created_key,
                    **_errors(
                        "InvalidRequest",
                        "TokenUnauthorized",
                        "AccountDisabled",
                        "PayloadTooLarge",
                        "RequestTimeout",
                    ),
                    "409": _error_response(
                        f"The account holds `auth.max_keys_per_user`"
                        f" ({config.auth.max_keys_per_user}) active keys.",
                        errors.TooManyKeys,
                    ),
                },
                security=token,
                body=_json_body(_schema("NewKey"), {"name": "laptop"}),
            ),
        },
        "/v1/keys/{id}": {
            "delete": _operation(
                "revokeKey",
                "keys",
                "Revoke a key, in every gateway process at once",
                {
                    "204": no_content,
                    **_errors("TokenUnauthorized", "AccountDisabled", "NotFound"),
                },
                security=token,
                description="Someone else's key, or an unknown one, is 404.",
                parameters=id_param,
            )
        },
        "/v1/keys/{id}/rotate": {
            "post": _operation(
                "rotateKey",
                "keys",
                "Replace a key with a new one",
                {
                    "201": created_key,
                    **_errors(
                        "InvalidRequest",
                        "TokenUnauthorized",
                        "AccountDisabled",
                        "NotFound",
                        "PayloadTooLarge",
                        "RequestTimeout",
                    ),
                    "409": _error_response(
                        "The key was already rotated: rotate its successor.",
                        errors.KeyAlreadyRotated,
                    ),
                },
                security=token,
                description="The new key keeps the old one's name, expiry and limits; the old"
                " one works until `grace_seconds` pass. An inactive or expired key is 404; a"
                " key rotated before is 409.",
                body=_json_body(_schema("Rotation"), {"grace_seconds": 3600}, required=False),
                parameters=id_param,
            )
        },
        "/v1/usage": {
            "get": _operation(
                "readUsage",
                "usage",
                "Images per key per UTC day, today's live counts included",
                {
                    "200": _ok(
                        "The days that have images.",
                        _schema("Usage"),
                        {
                            "data": [
                                {
                                    "date": "2026-01-01",
                                    "api_key_id": "0b7e6f1c-3d2a-4e59-8c1b-2f4a6d8e9c01",
                                    "images": 12,
                                }
                            ],
                            "total": 12,
                        },
                    ),
                    **_errors("InvalidRequest", "TokenUnauthorized", "AccountDisabled"),
                    "404": _error_response(
                        "`key_id` is not one of the caller's keys.", errors.NotFound
                    ),
                },
                security=token,
                parameters=[
                    _query("start", _DATE, "First day; default: 29 days before `end`."),
                    _query("end", _DATE, "Last day; default: today (UTC)."),
                    _query("key_id", _UUID, "Only this key's usage."),
                ],
                description=f"The range may cover at most {MAX_USAGE_DAYS} days.",
            )
        },
        "/admin/users": {
            "get": _operation(
                "adminFindUsers",
                "admin",
                "Find a user, or list the first 100",
                {
                    "200": _ok("The users.", _schema("AdminUserList")),
                    **_errors("InvalidRequest", "TokenUnauthorized", "AdminNotFound"),
                },
                security=admin,
                parameters=[email_query],
            )
        },
        "/admin/users/{id}": {
            "get": _operation(
                "adminGetUser",
                "admin",
                "A user with its keys and today's images",
                {
                    "200": _ok("The user.", _schema("AdminUserDetail")),
                    **_errors("TokenUnauthorized", "AdminNotFound"),
                },
                security=admin,
                parameters=id_param,
            ),
            "patch": _operation(
                "adminUpdateUser",
                "admin",
                "Change a user's plan or disable it",
                {
                    "200": _ok("The user, changed.", _schema("AdminUser")),
                    **_errors(
                        "InvalidRequest",
                        "TokenUnauthorized",
                        "AdminNotFound",
                        "PayloadTooLarge",
                        "RequestTimeout",
                    ),
                },
                security=admin,
                description="Audited; takes effect in every gateway process at once.",
                body=_json_body(_schema("AdminUserChange"), {"plan": config.default_plan}),
                parameters=id_param,
            ),
        },
        "/admin/keys/{id}": {
            "patch": _operation(
                "adminUpdateKey",
                "admin",
                "Override a key's limits, or disable it",
                {
                    "200": _ok("The key, changed.", _schema("AdminKey")),
                    **_errors(
                        "InvalidRequest",
                        "TokenUnauthorized",
                        "AdminNotFound",
                        "PayloadTooLarge",
                        "RequestTimeout",
                    ),
                },
                security=admin,
                description="Audited; takes effect in every gateway process at once.",
                body=_json_body(_schema("AdminKeyChange"), {"requests_per_minute": 120}),
                parameters=id_param,
            )
        },
        "/admin/usage": {
            "get": _operation(
                "adminUsage",
                "admin",
                "Per-user and per-key totals for one UTC day",
                {
                    "200": _ok("The day's usage.", _schema("AdminUsage")),
                    **_errors(
                        "InvalidRequest", "TokenUnauthorized", "AdminNotFound", "ServiceUnavailable"
                    ),
                },
                security=admin,
                parameters=[{**_query("date", _DATE, "The day, YYYY-MM-DD."), "required": True}],
            )
        },
        "/healthz": {
            "get": _operation(
                "healthz",
                "operations",
                "The process is up",
                {"200": _ok("Up.", _schema("Health"), {"status": "ok"})},
                security=[],
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "operations",
                "Postgres and Redis are reachable",
                {
                    "200": _ok("Ready.", _schema("Readiness")),
                    "503": _ok(
                        "Not ready, or draining: the body names what is down.",
                        _schema("NotReady"),
                    ),
                },
                security=[],
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "operations",
                "Prometheus metrics, summed over every worker process",
                {
                    "200": {
                        "description": "Prometheus text format. Keep it off public routes.",
                        "headers": {"X-Request-ID": _ref("headers", "X-Request-ID")},
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                security=[],
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "operations",
                "This document",
                {"200": _ok("OpenAPI 3.1.", {"type": "object"})},
                security=[],
            )
        },
    }


def _query(name: str, schema: JSON, description: str) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def build_openapi(
    config: Config, *, model_sizes: Mapping[str, Sequence[str]] | None = None
) -> JSON:
    """The OpenAPI 3.1 document of the gateway configured by ``config``.

    ``model_sizes`` (model name -> the sizes its backend supports) only enriches the
    descriptions and examples. Pure: no I/O, a new dict on every call.
    """
    sizes = dict(model_sizes or {})
    default_sizes = sizes.get(config.default_model) or ["1024x1024"]
    example_size = "1024x1024" if "1024x1024" in default_sizes else default_sizes[0]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "image-gateway",
            "version": __version__,
            "summary": "An API gateway for image generation, speaking OpenAI's Images API.",
            "description": (
                "Clients call the data plane with an API key (`Authorization: Bearer <key>`"
                " or `X-API-Key`, never in the URL); people manage their account and keys"
                " with an access token from `POST /v1/auth/login`; operators use the admin"
                ' token. Every error is JSON in OpenAI\'s shape, `{"error": {"message",'
                ' "type", "param", "code"}}`, and every response carries `X-Request-ID`.'
                " Unknown paths are 404 `not_found`, other methods 405 `method_not_allowed`."
            ),
        },
        "tags": [
            {"name": "images", "description": "The data plane (API keys)."},
            {"name": "accounts", "description": "Register, log in, the caller's account."},
            {"name": "keys", "description": "Self-service API keys (access token)."},
            {"name": "usage", "description": "Images per key per day (access token)."},
            {"name": "admin", "description": "Operators (admin token); 404 when off."},
            {"name": "operations", "description": "Health, readiness, metrics, this document."},
        ],
        "paths": _paths(config, example_size),
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": f"API key: {config.keys.prefix} + 38 base62 characters",
                    "description": "`Authorization: Bearer <key>`.",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "The same key, in `X-API-Key` (when there is no"
                    " Authorization header).",
                },
                "accessToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "From `POST /v1/auth/login`; expires after"
                    f" {config.auth.token_ttl_seconds} s.",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operators' `admin.token`.",
                },
            },
            "parameters": {
                "X-Request-ID": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Echoed if it is up to 128 of `A-Za-z0-9._:-`; otherwise"
                    " the gateway makes one.",
                },
                "id": {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": _UUID,
                    "description": "A UUID; anything else is 404.",
                },
            },
            "headers": _headers_components(),
            "responses": _responses_components(),
            "schemas": _schemas_components(config, sizes),
        },
    }


def openapi_json() -> Handler:
    """The ``GET /openapi.json`` handler of one app: the document is built on the first
    request (when the backends' sizes are known) and served from then on."""
    cached: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if not cached:
            app = request.app
            router = app[SERVICES].router if SERVICES in app else None
            sizes = (
                {m: list(chain[0].backend.size_names) for m, chain in router.models.items()}
                if router is not None
                else None
            )
            cached.append(orjson.dumps(build_openapi(app[CONFIG], model_sizes=sizes)))
        return web.Response(body=cached[0], content_type="application/json")

    return handler


@functools.cache
def _docs_html() -> bytes:
    return (DOCS_STATIC_DIR / "docs.html").read_bytes()


async def docs_page(request: web.Request) -> web.Response:
    """``GET /docs``: the API reference page; it renders ``openapi.json`` in the browser."""
    return web.Response(
        body=_docs_html(),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": DOCS_CSP,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
