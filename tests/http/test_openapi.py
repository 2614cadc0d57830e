"""The OpenAPI document: valid 3.1, the same routes as the app, the errors it really sends;
and ``/docs``, a page that works offline."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway import errors
from gateway.http.openapi import DOCS_STATIC_DIR
from tests.support.config import ADMIN_TOKEN, KEY_PREFIX
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.redis import PrivateRedis
from tests.support.streams import read_events
from tests.support.upstreams import FakeUpstream, upstream_config

GENERATE = "/v1/images/generations"
DOC_URI = "urn:gateway:openapi"
#: Routes that serve the description itself rather than the API.
DOCS_ROUTES = ("/docs",)


async def openapi(gateway: Gateway) -> dict[str, Any]:
    response = await gateway.client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(document: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``node`` with its ``$ref`` followed, and the pointer it was found at (if a ref)."""
    where = None
    while "$ref" in node:
        where = node["$ref"].removeprefix("#")
        node = document
        for part in where.split("/")[1:]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, where


def validator(document: dict[str, Any], at: str) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator for the schema at pointer ``at`` in the document."""
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator(
        {"$ref": f"{DOC_URI}#{at}"},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


async def assert_documented(
    document: dict[str, Any], method: str, path: str, response: Any
) -> dict[str, Any]:
    """The response's status, media type, body and headers are as the document says."""
    responses = document["paths"][path][method.lower()]["responses"]
    status = str(response.status)
    assert status in responses, f"{method} {path} answered undocumented {status}"
    documented, ref_at = resolve(document, responses[status])
    at = ref_at or pointer("paths", path, method.lower(), "responses", status)
    for name, header in documented.get("headers", {}).items():
        header, _ = resolve(document, header)
        value = response.headers.get(name)
        if header.get("required"):
            assert value is not None, f"{status} lacks the documented header {name}"
        if value is not None:
            jsonschema.validate(value, header["schema"])
    body: dict[str, Any] = {}
    if "content" in documented:
        assert response.content_type in documented["content"]
        if response.content_type != "application/json":
            return {"text": await response.text()}
        body = await response.json()
        schema_at = at + pointer("content", response.content_type, "schema")
        validator(document, schema_at).validate(body)
    return body


# -- the document --------------------------------------------------------------------


async def test_document_is_valid_openapi_3_1(gateway: Gateway):
    document = await openapi(gateway)
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


async def test_document_is_built_once_per_app_from_its_config(gateway: Gateway):
    first = await gateway.client.get("/openapi.json")
    second = await gateway.client.get("/openapi.json")
    assert await first.read() == await second.read()
    assert second.headers["X-Request-ID"]
    document = await first.json()
    schemas = document["components"]["schemas"]
    assert schemas["CreatedKey"]["properties"]["key"]["pattern"].startswith(f"^{KEY_PREFIX}")
    assert schemas["GenerationRequest"]["properties"]["model"]["enum"] == ["local", None]
    assert schemas["GenerationRequest"]["properties"]["n"]["maximum"] == 10  # the pro plan
    assert "256x256" in schemas["GenerationRequest"]["properties"]["size"]["examples"]


def app_routes(gateway: Gateway) -> Iterator[tuple[str, str]]:
    for route in gateway.client.app.router.routes():
        if route.method == "HEAD":
            continue
        canonical = route.resource.canonical if route.resource is not None else ""
        if canonical in DOCS_ROUTES or canonical.startswith("/docs/"):
            continue
        if canonical == "/console" or canonical.startswith("/console/"):
            continue  # the web console: HTML pages, not the API
        if route.method == "*":
            # The admin API's catch-all: any other method or path under /admin is 404.
            assert canonical.startswith("/admin")
            continue
        yield route.method, canonical


async def test_every_route_is_documented_and_nothing_else(gateway: Gateway):
    document = await openapi(gateway)
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    served = set(app_routes(gateway))
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented operations the app does not serve"
    assert ("POST", GENERATE) in served


async def test_security_schemes(gateway: Gateway):
    document = await openapi(gateway)
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"]["in"] == "header"
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    assert schemes["accessToken"]["bearerFormat"] == "JWT"
    assert schemes["adminToken"]["scheme"] == "bearer"
    paths = document["paths"]
    assert paths[GENERATE]["post"]["security"] == [{"apiKey": []}, {"apiKeyHeader": []}]
    assert paths["/v1/keys"]["post"]["security"] == [{"accessToken": []}]
    assert paths["/admin/usage"]["get"]["security"] == [{"adminToken": []}]
    assert paths["/v1/auth/login"]["post"]["security"] == []


async def test_generation_request_constraints(gateway: Gateway):
    document = await openapi(gateway)
    fields = document["components"]["schemas"]["GenerationRequest"]["properties"]
    assert (fields["prompt"]["minLength"], fields["prompt"]["maxLength"]) == (1, 4000)
    assert fields["n"]["minimum"] == 1
    assert fields["size"]["pattern"] == "^([0-9]+x[0-9]+|auto)$"
    assert fields["response_format"]["enum"] == ["b64_json", "url", None]
    assert (fields["seed"]["minimum"], fields["seed"]["maximum"]) == (0, 2**63 - 1)
    password = document["components"]["schemas"]["Credentials"]["properties"]["password"]
    assert (password["minLength"], password["maxLength"]) == (8, 128)
    assert fields["stream"]["type"] == ["boolean", "null"]
    assert fields["stream"]["default"] is False
    assert "not supported" not in fields["stream"]["description"]

    # OpenAI's parameters, with their values.
    def values(name: str) -> set[object]:
        return set(fields[name]["enum"])

    assert values("quality") == {"auto", "standard", "hd", "low", "medium", "high", None}
    assert values("style") == {"vivid", "natural", None}
    assert values("background") == {"auto", "transparent", "opaque", None}
    assert values("output_format") == {"png", "jpeg", "webp", None}
    assert values("moderation") == {"auto", "low", None}
    compression = fields["output_compression"]
    assert (compression["minimum"], compression["maximum"]) == (0, 100)
    assert (fields["partial_images"]["minimum"], fields["partial_images"]["maximum"]) == (0, 3)
    assert fields["user"]["maxLength"] == 256
    assert "auto" in fields["size"]["description"]


async def test_streamed_events_are_as_documented(gateway: Gateway, make_key: MakeKey):
    document = await openapi(gateway)
    streamed = document["paths"][GENERATE]["post"]["responses"]["200"]["content"]
    assert set(streamed) == {"application/json", "text/event-stream"}
    documented = streamed["text/event-stream"]["x-events"]
    assert set(documented) == {
        "image_generation.partial_image",
        "image_generation.completed",
        "error",
    }
    key = await make_key()
    response = await gateway.generate(key.key, stream=True, partial_images=1)
    events = await read_events(response)
    assert [name for name, _ in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    for name, data in events:
        validator(document, documented[name]["$ref"].removeprefix("#")).validate(data)


async def test_upload_bodies_are_multipart_with_binary_files(gateway: Gateway):
    document = await openapi(gateway)
    schemas = document["components"]["schemas"]
    for path, name, files in (
        ("/v1/images/edits", "EditRequest", ("image", "mask")),
        ("/v1/images/variations", "VariationRequest", ("image",)),
    ):
        body = document["paths"][path]["post"]["requestBody"]
        assert list(body["content"]) == ["multipart/form-data"]
        assert body["content"]["multipart/form-data"]["schema"] == {
            "$ref": f"#/components/schemas/{name}"
        }
        fields = schemas[name]["properties"]
        for field in files:
            assert "binary" in str(fields[field]), fields[field]
        assert "413" in document["paths"][path]["post"]["responses"]
    edit = schemas["EditRequest"]
    assert edit["properties"]["image[]"]["maxItems"] == 16
    assert edit["required"] == ["prompt"]
    assert edit["oneOf"] == [{"required": ["image"]}, {"required": ["image[]"]}]
    assert schemas["VariationRequest"]["required"] == ["image"]


#: What the README lists for the generation endpoint: status -> codes.
GENERATION_ERRORS = {
    "400": {"invalid_request", "content_policy_violation"},
    "401": {"missing_api_key", "invalid_api_key", "api_key_revoked", "api_key_expired"},
    "402": {"insufficient_credits"},
    "403": {"account_disabled"},
    "404": {"model_not_found"},
    "408": {"request_timeout"},
    "409": {"idempotency_key_in_use"},
    "413": {"payload_too_large"},
    "422": {"idempotency_key_reused"},
    "429": {"rate_limit_exceeded", "daily_quota_exceeded"},
    "502": {"upstream_error"},
    "503": {"service_unavailable"},
    "504": {"upstream_timeout"},
}


@pytest.mark.parametrize("path", [GENERATE, "/v1/generate"])
async def test_generation_documents_every_error_the_readme_lists(gateway: Gateway, path: str):
    document = await openapi(gateway)
    responses = document["paths"][path]["post"]["responses"]
    assert set(responses) == {"200", "202", *GENERATION_ERRORS}  # 202: Prefer: respond-async
    for status, codes in GENERATION_ERRORS.items():
        response, _ = resolve(document, responses[status])
        schema = response["content"]["application/json"]["schema"]
        assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
        assert set(schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]) == codes
    ok_headers = responses["200"]["headers"]
    limited_headers = resolve(document, responses["429"])[0]["headers"]
    for name in ("RateLimit-Policy", "RateLimit", "x-ratelimit-remaining-images", "X-Request-ID"):
        assert name in ok_headers
        assert name in limited_headers
    assert "Retry-After" in limited_headers


def walk_media(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(pointer, media type object) for every request and response body in the document."""
    places = [("/components/responses", document["components"]["responses"])]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            at = pointer("paths", path, method)
            if "requestBody" in operation:
                places.append((at, {"requestBody": operation["requestBody"]}))
            places.append((at + "/responses", operation["responses"]))
    for at, holder in places:
        for name, entry in holder.items():
            for media_type, media in entry.get("content", {}).items():
                yield at + pointer(name, "content", media_type), media


async def test_every_example_matches_its_schema(gateway: Gateway):
    document = await openapi(gateway)
    checked = 0
    for at, media in walk_media(document):
        check = validator(document, at + "/schema")
        examples = [media["example"]] if "example" in media else []
        examples += [e["value"] for e in media.get("examples", {}).values()]
        for example in examples:
            check.validate(example)
            checked += 1
    for header in document["components"]["headers"].values():
        jsonschema.validate(header["example"], header["schema"])
        checked += 1
    assert checked > 30


# -- the document against real responses ----------------------------------------------


async def test_a_generated_image_is_as_documented(gateway: Gateway, make_key: MakeKey):
    document = await openapi(gateway)
    key = await make_key()
    for path in (GENERATE, "/v1/generate"):
        response = await gateway.client.post(
            path,
            json={"prompt": "a lighthouse", "size": "256x256", "n": 2},
            headers={"X-API-Key": key.key},
        )
        assert response.status == 200
        body = await assert_documented(document, "POST", path, response)
        assert body["usage"] == {"images": 2}


async def documented_error(
    document: dict[str, Any], response: Any, status: int, code: str, path: str = GENERATE
) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await assert_documented(document, "POST", path, response)
    assert body["error"]["code"] == code
    return body


async def test_documented_client_errors_are_what_is_sent(
    gateway: Gateway, make_key: MakeKey, db: Any
):
    document = await openapi(gateway)
    key = await make_key()
    post = gateway.client.post
    auth = {"Authorization": f"Bearer {key.key}"}
    await documented_error(document, await gateway.generate(None), 401, "missing_api_key")
    await documented_error(document, await gateway.generate("nope"), 401, "invalid_api_key")
    await documented_error(
        document, await post(f"{GENERATE}?api_key=x", json={"prompt": "p"}), 400, "invalid_request"
    )
    for body in ({"prompt": ""}, {"prompt": "p", "n": 0}, {"prompt": "p", "size": "big"}):
        response = await post(GENERATE, json=body, headers=auth)
        await documented_error(document, response, 400, "invalid_request")
    await documented_error(
        document, await post(GENERATE, data=b"[1]", headers=auth), 400, "invalid_request"
    )
    await documented_error(
        document, await gateway.generate(key.key, model="dall-e-9"), 404, "model_not_found"
    )
    await documented_error(
        document,
        await post(GENERATE, data=b"{" + b" " * 70_000 + b"}", headers=auth),
        413,
        "payload_too_large",
    )
    expired = await make_key(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    await documented_error(document, await gateway.generate(expired.key), 401, "api_key_expired")
    disabled = await make_key(user_active=False)
    await documented_error(document, await gateway.generate(disabled.key), 403, "account_disabled")
    revoked = await make_key()  # never used, so not cached in process either
    await db.execute("UPDATE api_keys SET is_active = false WHERE id = $1", revoked.key_id)
    response = await post(
        "/v1/generate", json={"prompt": "p"}, headers={"Authorization": f"Bearer {revoked.key}"}
    )
    await documented_error(document, response, 401, "api_key_revoked", "/v1/generate")


async def test_documented_limits_are_what_is_sent(gateway: Gateway, make_key: MakeKey):
    document = await openapi(gateway)
    rate_limited = await make_key(requests_per_minute=1)
    assert (await gateway.generate(rate_limited.key)).status == 200
    await documented_error(
        document, await gateway.generate(rate_limited.key), 429, "rate_limit_exceeded"
    )
    over_quota = await make_key(images_per_day=1)
    assert (await gateway.generate(over_quota.key)).status == 200
    await documented_error(
        document, await gateway.generate(over_quota.key), 429, "daily_quota_exceeded"
    )


@pytest.mark.parametrize(
    ("mode", "status", "code"), [("fail", 502, "upstream_error"), ("hang", 504, "upstream_timeout")]
)
async def test_documented_upstream_errors_are_what_is_sent(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    mode: str,
    status: int,
    code: str,
):
    fake_upstream.mode = mode
    gateway = await make_gateway(upstream_config(fake_upstream, timeout=0.3))
    document = await openapi(gateway)
    key = await make_key()
    response = await gateway.generate(key.key, model="remote")
    await documented_error(document, response, status, code)


async def test_documented_unavailability_is_what_is_sent(
    make_gateway: MakeGateway, make_key: MakeKey, private_redis: PrivateRedis
):
    gateway = await make_gateway({"redis": {"url": private_redis.url}})
    document = await openapi(gateway)
    key = await make_key()
    assert (await gateway.generate(key.key)).status == 200  # the key is cached in process
    private_redis.stop()
    await documented_error(document, await gateway.generate(key.key), 503, "service_unavailable")
    ready = await gateway.client.get("/readyz")
    assert ready.status == 503
    await assert_documented(document, "GET", "/readyz", ready)


async def test_account_plane_answers_are_as_documented(
    make_gateway: MakeGateway, raw_config: dict[str, Any]
):
    gateway = await make_gateway(
        {"redis": {"key_prefix": f"{raw_config['redis']['key_prefix']}{uuid.uuid4().hex[:8]}:"}}
    )
    document = await openapi(gateway)
    client = gateway.client
    email = f"doc-{uuid.uuid4().hex[:12]}@example.com"
    credentials = {"email": email, "password": "correct horse battery"}

    async def call(method: str, path: str, template: str | None = None, **kw: Any) -> Any:
        response = await client.request(method, path, **kw)
        return response, await assert_documented(document, method, template or path, response)

    _, user = await call("POST", "/v1/auth/register", json=credentials)
    response, _ = await call("POST", "/v1/auth/register", json=credentials)
    assert response.status == 409
    response, _ = await call("POST", "/v1/auth/login", json={**credentials, "password": "x"})
    assert response.status == 401
    _, token = await call("POST", "/v1/auth/login", json=credentials)
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    await call("GET", "/v1/me", headers=auth)
    response, _ = await call("GET", "/v1/me", headers={"Authorization": "Bearer forged"})
    assert response.status == 401
    _, created = await call("POST", "/v1/keys", json={"name": "doc"}, headers=auth)
    await call("GET", "/v1/keys", headers=auth)
    _, rotated = await call(
        "POST", f"/v1/keys/{created['id']}/rotate", "/v1/keys/{id}/rotate", headers=auth
    )
    response, _ = await call("DELETE", f"/v1/keys/{created['id']}", "/v1/keys/{id}", headers=auth)
    assert response.status == 204
    await call("GET", "/v1/usage", params={"key_id": rotated["id"]}, headers=auth)
    response, _ = await call("GET", "/v1/usage", params={"start": "x"}, headers=auth)
    assert response.status == 400
    models, _ = await call("GET", "/v1/models", headers={"X-API-Key": rotated["key"]})
    assert models.status == 200
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    await call("GET", "/admin/users", params={"email": email}, headers=admin)
    await call("GET", f"/admin/users/{user['id']}", "/admin/users/{id}", headers=admin)
    user_path, key_path = f"/admin/users/{user['id']}", f"/admin/keys/{rotated['id']}"
    await call("PATCH", user_path, "/admin/users/{id}", json={"plan": "pro"}, headers=admin)
    await call("PATCH", key_path, "/admin/keys/{id}", json={"images_per_day": None}, headers=admin)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    await call("GET", "/admin/usage", params={"date": today}, headers=admin)
    response, _ = await call("GET", "/admin/usage", headers={"Authorization": "Bearer no"})
    assert response.status == 401
    for path in ("/healthz", "/readyz", "/metrics"):
        response, _ = await call("GET", path)
        assert response.status == 200


async def test_errors_module_and_document_agree(gateway: Gateway):
    """Every error code the document names is one the gateway defines, with its type."""
    document = await openapi(gateway)
    defined = {
        cls.code: cls.type
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.GatewayError)
    }
    for _, media in walk_media(document):
        for example in media.get("examples", {}).values():
            error = example["value"]["error"]
            assert defined[error["code"]] == error["type"]


# -- /docs ----------------------------------------------------------------------------

OUTSIDE = re.compile(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}")
LINKED = re.compile(r"""(?:src|href)="([^"#]+)"|fetch\("([^"]+)\"""")


async def test_docs_page_works_offline(gateway: Gateway):
    response = await gateway.client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    page = await response.text()
    assert "<script>" not in page, "inline scripts are refused by the CSP"
    assert " style=" not in page, "inline styles are refused by the CSP"
    texts = {"/docs": page}
    for name in sorted(p.name for p in DOCS_STATIC_DIR.iterdir()):
        asset = await gateway.client.get(f"/docs/static/{name}")
        assert asset.status == 200, name
        texts[name] = await asset.text()
    linked = {a or b for text in texts.values() for a, b in LINKED.findall(text)}
    assert linked == {"docs/static/docs.css", "docs/static/docs.js", "openapi.json"}
    for name, text in texts.items():
        assert "http://" not in text, name
        assert "https://" not in text, name
        assert not OUTSIDE.search(text), name


async def test_docs_page_links_resolve_from_docs(gateway: Gateway):
    # The page links relatively, so it works behind a path prefix too.
    for relative in ("docs/static/docs.js", "docs/static/docs.css", "openapi.json"):
        response = await gateway.client.get(f"/{relative}")
        assert response.status == 200, relative
