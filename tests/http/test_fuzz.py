"""Schemathesis against a real gateway and its own ``/openapi.json``: every operation,
valid and invalid input, with real credentials. No 5xx; every answer as documented
(status, media type, headers, body), every error in the one documented shape."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import jsonschema
import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis import CheckContext, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.config import parse_config
from gateway.http.openapi import build_openapi
from tests.support.config import ADMIN_TOKEN, REDIS_URL, base_raw_config
from tests.support.gateway import MakeGateway, MakeKey

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

#: Examples per operation and generation mode (valid input, then invalid input); raise it
#: for a longer exploratory run: FUZZ_MAX_EXAMPLES=500 pytest tests/http/test_fuzz.py
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
DEADLINE = dt.timedelta(seconds=2)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ERROR_FIELDS = {"message", "type", "param", "code"}
PASSWORD = "fuzzing passwords are long enough"


def documented_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation, from the same builder the app serves."""
    config = parse_config(base_raw_config("postgresql://unused/db", REDIS_URL, "unused:"), {})
    paths = build_openapi(config)["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item]


#: Operations the fuzzer shows to be broken when the failing input cannot be pinned down
#: to one request (see test_pinned_findings for those that can): operation -> the bug.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@dataclass
class Target:
    """A running gateway and what a fuzzer needs to get past its front door."""

    client: TestClient[web.Request, web.Application]
    base_url: str
    credentials: dict[str, str]
    #: Ids that exist, per path template, so some cases reach more than a 404.
    known_ids: dict[str, str]
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)

    def headers_for(self, security: list[dict[str, Any]]) -> dict[str, str]:
        """Credentials for the first security scheme an operation accepts."""
        if not security:
            return {}
        scheme = next(iter(security[0]))
        if scheme == "apiKeyHeader":
            return {"X-API-Key": self.credentials[scheme]}
        return {"Authorization": f"Bearer {self.credentials[scheme]}"}


@pytest.fixture
async def target(
    make_gateway: MakeGateway, make_key: MakeKey, raw_config: dict[str, Any]
) -> Target:
    # A Redis namespace of its own (inside the run's), and per-IP budgets the fuzzer
    # cannot exhaust for 127.0.0.1 in other tests.
    gateway = await make_gateway(
        {
            "auth": {"register_per_minute_per_ip": 10_000, "login_per_minute_per_ip": 10_000},
            "redis": {"key_prefix": f"{raw_config['redis']['key_prefix']}{uuid.uuid4().hex[:8]}:"},
        }
    )
    client = gateway.client
    api_key = await make_key("pro")
    email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    credentials = {"email": email, "password": PASSWORD}
    assert (await client.post("/v1/auth/register", json=credentials)).status == 201
    login = await client.post("/v1/auth/login", json=credentials)
    token = (await login.json())["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    own_key = await (await client.post("/v1/keys", json={"name": "fuzz"}, headers=auth)).json()
    # The admin operations change this user and key, never the ones used to call.
    victim = await make_key("free")
    return Target(
        client=client,
        base_url=str(client.make_url("")).rstrip("/"),
        credentials={
            "apiKey": api_key.key,
            "apiKeyHeader": api_key.key,
            "accessToken": token,
            "adminToken": ADMIN_TOKEN,
        },
        known_ids={
            "/v1/keys/{id}": own_key["id"],
            "/v1/keys/{id}/rotate": own_key["id"],
            "/admin/users/{id}": str(victim.user_id),
            "/admin/keys/{id}": str(victim.key_id),
        },
    )


def assert_error_shape(response: schemathesis.Response) -> None:
    if response.status_code < 400:
        return
    headers = {name.lower(): values[0] for name, values in response.headers.items()}
    assert headers["content-type"].startswith("application/json"), response.text
    assert headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["code"], str)


def request_body_validator(
    document: dict[str, Any], method: str, path: str
) -> jsonschema.Draft202012Validator | None:
    operation = document["paths"][path][method.lower()]
    if "requestBody" not in operation:
        return None
    escaped = path.replace("~", "~0").replace("/", "~1")
    at = f"/paths/{escaped}/{method.lower()}/requestBody/content/application~1json/schema"
    registry: Registry[Any] = Registry().with_resource(
        "urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator({"$ref": f"urn:openapi#{at}"}, registry=registry)


def invalid_data_rejected(body: jsonschema.Draft202012Validator | None) -> Any:
    """schemathesis's ``negative_data_rejection``, minus its false alarms: it breaks a
    ``pattern`` by appending ``*``, which leaves many patterns (``\\S``) matched."""

    def check(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
        try:
            negative_data_rejection(ctx, response, case)
        except AcceptedNegativeData:
            if body is not None and isinstance(case.body, dict) and body.is_valid(case.body):
                return
            raise

    return check


def fuzz(target: Target, method: str, path: str) -> None:
    """Run in a thread: the gateway serves on the test's event loop meanwhile."""
    url = f"{target.base_url}/openapi.json"
    schema = schemathesis.openapi.from_url(url, timeout=10)
    document = requests.get(url, timeout=10).json()
    body = request_body_validator(document, method, path)
    operation = schema[path][method]
    headers = target.headers_for(operation.definition.raw.get("security", []))
    # Only a body or a parameter besides the free-form X-Request-ID can be made invalid.
    raw = document["paths"][path][method.lower()]
    invalid_possible = "requestBody" in raw or len(raw.get("parameters", [])) > 1
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if invalid_possible else [])
    for mode in modes:
        cases = operation.as_strategy(generation_mode=mode, headers=headers)
        if path in target.known_ids:
            known = operation.as_strategy(
                generation_mode=mode,
                headers=headers,
                path_parameters={"id": target.known_ids[path]},
            )
            cases = st.one_of(cases, known)
        checks = CHECKS + ([invalid_data_rejected(body)] if mode.is_negative else [])
        try:
            fuzz_cases(target, cases, checks)
        except hypothesis.errors.Unsatisfiable:
            # The parameters are free-form strings (GET /admin/users?email=...): there
            # are no invalid values to send.
            assert mode.is_negative


def fuzz_cases(target: Target, cases: Any, checks: list[Any]) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=DEADLINE,
        derandomize=True,  # the same cases on every run: failures are reproducible
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=cases)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=target.base_url, session=session, timeout=10)
        target.statuses[response.status_code] += 1
        case.validate_response(response, checks=checks)
        assert_error_shape(response)

    with requests.Session() as session:
        run()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param(
            method,
            path,
            id=f"{method} {path}",
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(method, path)])]
            if (method, path) in KNOWN_BUGS
            else [],
        )
        for method, path in documented_operations()
    ],
)
async def test_fuzz_operation(target: Target, method: str, path: str):
    await asyncio.to_thread(fuzz, target, method, path)
    assert sum(target.statuses.values()) >= MAX_EXAMPLES
    # The credentials work: some cases get past authentication.
    assert set(target.statuses) - {401}, target.statuses


# -- what longer runs found, kept as regressions ---------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "method", "path", "request_kwargs"),
    [
        # Found by the fuzzer (FUZZ_MAX_EXAMPLES=400).
        pytest.param(
            None,
            "POST",
            "/v1/auth/login",
            {"json": {"email": "\x00", "password": "x"}},
            id="login-email-nul",
        ),
        pytest.param(
            "adminToken",
            "GET",
            "/admin/users",
            {"params": {"email": "\x00"}},
            id="admin-users-email-nul",
        ),
        # The same kinds of input, where the fuzzer's cases did not reach.
        pytest.param(
            None,
            "POST",
            "/v1/auth/register",
            {"json": {"email": "a\x00b@example.com", "password": "long enough"}},
            id="register-email-nul",
        ),
        pytest.param(
            "accessToken",
            "POST",
            "/v1/keys",
            {"json": {"name": "a\x00b"}},
            id="key-name-nul",
        ),
        pytest.param(
            "accessToken",
            "POST",
            "/v1/keys",
            {"json": {"name": "far", "expires_at": "9999-12-31T23:59:59-14:00"}},
            id="key-expiry-past-9999-utc",
        ),
        pytest.param(
            "apiKey",
            "POST",
            "/v1/images/generations",
            {"json": {"prompt": "p", "size": "\u00b2x1"}},
            id="size-superscript-digit",
        ),
        pytest.param(
            "accessToken",
            "GET",
            "/v1/usage",
            {"params": {"end": "0001-01-01"}},
            id="usage-end-year-1",
        ),
    ],
)
async def test_pinned_findings(
    target: Target, scheme: str | None, method: str, path: str, request_kwargs: dict[str, Any]
):
    """Inputs that once made the gateway answer 500: each is now a documented 4xx (or
    a 2xx)."""
    headers = target.headers_for([{scheme: []}] if scheme else [])
    response = await target.client.request(method, path, headers=headers, **request_kwargs)
    assert response.status < 500, await response.text()
    if response.status >= 400:
        error = (await response.json())["error"]
        assert set(error) == ERROR_FIELDS
