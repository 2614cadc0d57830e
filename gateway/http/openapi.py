"""The API description: an OpenAPI 3.1 document built from the route table.

Every operation comes from :data:`gateway.http.operations.OPERATIONS`, every body's schema
from its type (:mod:`gateway.http.schemas`, through msgspec's JSON Schema 2020-12, which
OpenAPI 3.1 uses), every error from :mod:`gateway.errors`. Only what depends on the
config (model names and sizes, plans, the key prefix) is added here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from gateway import __version__
from gateway.config import Config
from gateway.http.contract import Answer, Auth, DocFacts, Documented, Failure, Operation
from gateway.http.docs import DOCS_CSP, DOCS_STATIC_DIR
from gateway.http.operations import OPERATIONS
from gateway.http.schemas.base import RequestBody
from gateway.http.schemas.errors import Error, error_example
from gateway.http.schemas.images import DEFAULT_SIZE

__all__ = ["DOCS_CSP", "DOCS_STATIC_DIR", "build_openapi"]

JSON = dict[str, Any]

_SECURITY: dict[Auth, list[JSON]] = {
    Auth.API_KEY: [{"apiKey": []}, {"apiKeyHeader": []}],
    Auth.ACCESS_TOKEN: [{"accessToken": []}],
    Auth.ADMIN_TOKEN: [{"adminToken": []}],
    Auth.API_KEY_OR_TOKEN: [{"apiKey": []}, {"apiKeyHeader": []}, {"accessToken": []}],
    Auth.NONE: [],
}
_TAGS = {
    "images": "The data plane (API keys).",
    "jobs": "Image generation in the background (API keys).",
    "accounts": "Register, log in, the caller's account.",
    "keys": "Self-service API keys (access token).",
    "usage": "Images per key per day (access token).",
    "credits": "Prepaid credits: balances and their ledger (API key or access token).",
    "admin": "Operators (admin token); 404 when off.",
    "operations": "Health, readiness, metrics, this document.",
}


def build_openapi(
    config: Config,
    *,
    model_sizes: Mapping[str, Sequence[str]] | None = None,
    operations: Sequence[Operation] = OPERATIONS,
) -> JSON:
    """The OpenAPI 3.1 document of the gateway configured by ``config``.

    ``model_sizes`` (model name -> the sizes its backend supports) only enriches the
    descriptions and examples. Pure: no I/O, a new dict on every call.
    """
    sizes = dict(model_sizes or {})
    default_sizes = sizes.get(config.default_model) or [DEFAULT_SIZE]
    facts = DocFacts(config, DEFAULT_SIZE if DEFAULT_SIZE in default_sizes else default_sizes[0])
    shared: dict[str, JSON] = {}
    paths: dict[str, JSON] = {}
    for operation in operations:
        item = paths.setdefault(operation.path, {})
        item[operation.method.lower()] = _operation(operation, facts, shared)
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
        "tags": [{"name": name, "description": text} for name, text in _TAGS.items()],
        "paths": paths,
        "components": {
            "securitySchemes": _security_schemes(config),
            "parameters": {
                "X-Request-ID": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Echoed if it is up to 128 of `A-Za-z0-9._:-`; otherwise"
                    " the gateway makes one.",
                },
            },
            "headers": _headers(),
            "responses": dict(sorted(shared.items())),
            "schemas": _schemas(operations, config, sizes),
        },
    }


def _value(value: Documented[Any], facts: DocFacts) -> Any:
    return value(facts) if callable(value) else value


def _ref(kind: str, name: str) -> JSON:
    return {"$ref": f"#/components/{kind}/{name}"}


# -- operations ------------------------------------------------------------------------


def _operation(operation: Operation, facts: DocFacts, shared: dict[str, JSON]) -> JSON:
    responses: dict[str, JSON] = {}
    for answer in operation.answers:
        documented = _answer(answer, facts)
        same = responses.get(str(answer.status))
        if same is not None:  # another body of the same status (an event stream)
            same["description"] += " " + documented["description"]
            same["headers"].update(documented["headers"])
            same.setdefault("content", {}).update(documented.get("content", {}))
        else:
            responses[str(answer.status)] = documented
    for status, failure in operation.all_failures().items():
        if failure.name is None:
            responses[str(status)] = _failure(failure, facts)
        else:
            shared.setdefault(failure.name, _failure(failure, facts))
            responses[str(status)] = _ref("responses", failure.name)
    op: JSON = {
        "operationId": operation.operation_id,
        "tags": [operation.tag],
        "summary": operation.summary,
        "security": _SECURITY[operation.auth],
        "parameters": [
            _ref("parameters", "X-Request-ID"),
            *(
                {
                    "name": p.name,
                    "in": p.location,
                    "required": p.required,
                    "schema": dict(p.schema),
                    "description": p.description,
                }
                for p in operation.parameters
            ),
        ],
        "responses": dict(sorted(responses.items())),
    }
    if operation.description:
        op["description"] = operation.description
    if operation.body is not None:
        media: JSON = {"schema": _ref("schemas", operation.body.__name__)}
        if operation.body_example is not None:
            media["example"] = _value(operation.body_example, facts)
        op["requestBody"] = {
            "required": operation.body_required,
            "content": {operation.body_media_type: media},
        }
    return op


def _headers_of(names: Iterable[str]) -> JSON:
    return {name: _ref("headers", name) for name in ("X-Request-ID", *names)}


def _answer(answer: Answer, facts: DocFacts) -> JSON:
    documented: JSON = {"description": answer.description, "headers": _headers_of(answer.headers)}
    schema = (
        _ref("schemas", answer.schema.__name__) if answer.schema is not None else answer.raw_schema
    )
    if answer.events:
        documented["content"] = {
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": "Server-Sent Events: each is `event: <name>`, `data: <one"
                    " line of JSON>` and a blank line; `x-events` gives each name's data.",
                },
                "x-events": {name: _ref("schemas", kind.__name__) for name, kind in answer.events},
            }
        }
    elif schema is not None:
        media: JSON = {"schema": dict(schema)}
        if answer.example is not None:
            media["example"] = _value(answer.example, facts)
        documented["content"] = {
            media_type: media for media_type in (answer.media_type, *answer.other_media_types)
        }
    return documented


def _failure(failure: Failure, facts: DocFacts) -> JSON:
    """An error answer: an :class:`Error` whose code is one of ``failure.kinds``'."""
    kinds = failure.kinds
    narrowed = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"enum": [kind.code for kind in kinds]},
                    "type": {"enum": sorted({kind.type for kind in kinds})},
                },
            }
        },
    }
    examples = {
        kind.code: {"summary": kind.code, "value": error_example(kind, failure.param)}
        for kind in kinds
    }
    return {
        "description": _value(failure.description, facts),
        "headers": _headers_of(failure.headers),
        "content": {
            "application/json": {
                "schema": {"allOf": [_ref("schemas", "Error"), narrowed]},
                "examples": examples,
            }
        },
    }


# -- schemas ---------------------------------------------------------------------------


def _schemas(
    operations: Sequence[Operation], config: Config, sizes: Mapping[str, Sequence[str]]
) -> JSON:
    types: list[type[Any]] = [Error]
    for operation in operations:
        if operation.body is not None:
            types.append(operation.body)
        types += [answer.schema for answer in operation.answers if answer.schema is not None]
        types += [kind for answer in operation.answers for _, kind in answer.events]
    _, components = msgspec.json.schema_components(
        dict.fromkeys(types), ref_template="#/components/schemas/{name}"
    )
    schemas: JSON = {}
    for kind in dict.fromkeys(types):
        if issubclass(kind, RequestBody) and kind.schema_extra:
            components[kind.__name__].update(kind.schema_extra)
    for name, schema in sorted(components.items()):
        schema.pop("title", None)
        schemas[name] = _nullable_flat(schema)
    _configure(schemas, config, sizes)
    return schemas


def _nullable_flat(node: Any) -> Any:
    """``anyOf: [X, {type: null}]`` as ``X`` with ``null`` among its types or values:
    the form readers (and schemathesis) handle best. The same JSON Schema otherwise."""
    if isinstance(node, list):
        return [_nullable_flat(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_flat(value) for key, value in node.items()}
    options = node.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and {"type": "null"} in options):
        return node
    other = options[0] if options[1] == {"type": "null"} else options[1]
    if "type" in other and isinstance(other["type"], str):
        merged = {**other, "type": [other["type"], "null"]}
    elif "enum" in other:
        merged = {**other, "enum": [*other["enum"], None]}
    else:
        return node
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    return {**merged, **rest}


def _configure(schemas: JSON, config: Config, sizes: Mapping[str, Sequence[str]]) -> None:
    """What the config decides: models and their sizes, plans, the key format."""
    generation = schemas["GenerationRequest"]["properties"]
    per_plan = ", ".join(f"{k}: {p.max_images_per_request}" for k, p in config.plans.items())
    generation["n"]["maximum"] = max(p.max_images_per_request for p in config.plans.values())
    n = generation["n"]
    n["description"] = n["description"].rstrip(".") + f" ({per_plan})."
    size_lines = "; ".join(f"`{m}`: {', '.join(s)}" for m, s in sizes.items())
    generation["size"]["examples"] = sorted({s for names in sizes.values() for s in names}) or [
        DEFAULT_SIZE
    ]
    generation["size"]["description"] = generation["size"]["description"].rstrip(".") + (
        f" ({size_lines})." if size_lines else "."
    )
    generation["model"]["enum"] = [*config.models, None]
    generation["model"]["default"] = config.default_model
    schemas["Model"]["properties"]["id"]["enum"] = list(config.models)
    key = schemas["CreatedKey"]["properties"]["key"]
    key["pattern"] = f"^{re.escape(config.keys.prefix)}[0-9A-Za-z]{{38}}$"
    for schema in schemas.values():
        plan = schema.get("properties", {}).get("plan")
        if plan is not None:
            plan["enum"] = list(config.plans)


def _security_schemes(config: Config) -> JSON:
    return {
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
            "description": "The same key, in `X-API-Key` (when there is no Authorization header).",
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
    }


def _headers() -> JSON:
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
        "X-Gateway-Backend": header(
            "The backend (`backends:` name) that made the images: the model's first, or"
            " a fallback after an upstream failure.",
            {"type": "string"},
            "openai",
        ),
        "Server-Timing": header(
            "What the request took, in milliseconds: the gateway's own time and the"
            " upstream calls' (no `upstream` entry when none was made).",
            {"type": "string"},
            "gateway;dur=1.2, upstream;dur=2034.5",
        ),
        "Location": header(
            "Where the job is read: `/v1/images/jobs/{id}`.",
            {"type": "string", "pattern": "^/v1/images/jobs/job_[A-Za-z0-9]{22}$"},
            "/v1/images/jobs/job_4GkQ7pLm2Rt7Vw4Ks8Dn1B",
        ),
        "x-credits-remaining": {
            "description": "Credits the user has left after this request (this month's"
            " allowance and purchased ones), when the plan has `monthly_credits`.",
            "required": False,
            "schema": number,
            "example": "96",
        },
        "Preference-Applied": header(
            "`respond-async` (RFC 7240): a job was made instead of waiting for the images.",
            {"type": "string", "const": "respond-async"},
            "respond-async",
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
            {"type": "string", "pattern": '^"requests";q=[0-9]+;w=60, "images";q=[0-9]+;w=86400$'},
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
