"""Accounts: register, log in, /v1/me, account tokens (JWT) and brute-force limits."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import asyncpg
import jwt
import pytest

from gateway.keys.issue import issue_key
from tests.support.accounts import PASSWORD
from tests.support.config import JWT_SECRET, KEY_PREFIX
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import expect_error, parse_time
from tests.support.usage import today

OLD_SECRET = "old-jwt-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
NEW_SECRET = "new-jwt-secret-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex}@example.com"


async def register(
    gateway: Gateway, email: str, password: str = PASSWORD, headers: dict[str, str] | None = None
) -> Any:
    return await gateway.client.post(
        "/v1/auth/register", json={"email": email, "password": password}, headers=headers
    )


async def login(
    gateway: Gateway, email: str, password: str = PASSWORD, headers: dict[str, str] | None = None
) -> Any:
    return await gateway.client.post(
        "/v1/auth/login", json={"email": email, "password": password}, headers=headers
    )


async def new_user(gateway: Gateway, password: str = PASSWORD) -> dict[str, Any]:
    email = unique_email()
    response = await register(gateway, email, password)
    assert response.status == 201, await response.text()
    user: dict[str, Any] = await response.json()
    return user


async def token_for(gateway: Gateway, email: str, password: str = PASSWORD) -> str:
    response = await login(gateway, email, password)
    assert response.status == 200, await response.text()
    token: str = (await response.json())["access_token"]
    return token


async def me(gateway: Gateway, token: str) -> Any:
    return await gateway.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(claims: dict[str, Any], secret: str, algorithm: str, kid: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short HMAC keys for HS384/HS512: on purpose
        return jwt.encode(claims, secret, algorithm=algorithm, headers={"kid": kid})


# -- register -------------------------------------------------------------------------


async def test_register_creates_a_free_account(app: Gateway, db: asyncpg.Connection):
    email = unique_email()
    response = await register(app, email)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert {"id", "email", "plan", "created_at"} <= set(body)
    assert body["email"] == email
    assert body["plan"] == "free"
    uuid.UUID(body["id"])
    assert abs((dt.datetime.now(dt.UTC) - parse_time(body["created_at"])).total_seconds()) < 300
    text = await response.text()
    assert PASSWORD not in text
    assert "password" not in body
    assert "password_hash" not in body
    row = await db.fetchrow(
        "SELECT email, plan, password_hash FROM users WHERE id = $1", uuid.UUID(body["id"])
    )
    assert row["email"] == email
    assert row["plan"] == "free"
    assert row["password_hash"]
    assert PASSWORD not in row["password_hash"]  # stored hashed, never as sent


async def test_register_trims_and_lower_cases_the_email(app: Gateway):
    local = f"MiXeD-{uuid.uuid4().hex}"
    response = await register(app, f"  {local}@Example.COM \t")
    assert response.status == 201, await response.text()
    assert (await response.json())["email"] == f"{local.lower()}@example.com"
    assert (await login(app, f"{local.lower()}@example.com")).status == 200


async def test_taken_email_is_refused_case_insensitively(app: Gateway):
    email = unique_email()
    assert (await register(app, email)).status == 201
    await expect_error(await register(app, email), 409, "email_taken")
    await expect_error(await register(app, email.upper()), 409, "email_taken")
    await expect_error(await register(app, f" {email.title()} "), 409, "email_taken")


@pytest.mark.parametrize(
    "body",
    [
        {"password": PASSWORD},
        {"email": None, "password": PASSWORD},
        {"email": "", "password": PASSWORD},
        {"email": "no-at-sign.example.com", "password": PASSWORD},
        {"email": "a" * 243 + "@example.com", "password": PASSWORD},  # 255 characters
        {"email": 12345, "password": PASSWORD},
        {"email": ["a@example.com"], "password": PASSWORD},
        {"email": {"address": "a@example.com"}, "password": PASSWORD},
    ],
)
async def test_register_bad_email(app: Gateway, body: dict[str, Any]):
    response = await app.client.post("/v1/auth/register", json=body)
    await expect_error(response, 400, "invalid_request", "email")


@pytest.mark.parametrize(
    "password",
    [
        "short",
        "1234567",  # 7 characters
        "€€€€€€€",  # 7 characters (21 bytes): the limit counts characters
        "x" * 129,
        12345678,
        None,
        ["password1"],
    ],
)
async def test_register_bad_password(app: Gateway, password: Any):
    response = await register(app, unique_email(), password)
    await expect_error(response, 400, "invalid_request", "password")


async def test_register_missing_password(app: Gateway):
    response = await app.client.post("/v1/auth/register", json={"email": unique_email()})
    await expect_error(response, 400, "invalid_request", "password")


@pytest.mark.parametrize("password", ["x" * 8, "y" * 128, "é" * 128])
async def test_password_length_bounds_are_inclusive(app: Gateway, password: str):
    email = unique_email()
    response = await register(app, email, password)
    assert response.status == 201, await response.text()
    assert (await login(app, email, password)).status == 200


@pytest.mark.parametrize("raw", [b"not json", b"{", b"[1, 2]", b'"text"', b""])
async def test_register_body_that_is_not_a_json_object(app: Gateway, raw: bytes):
    response = await app.client.post(
        "/v1/auth/register", data=raw, headers={"Content-Type": "application/json"}
    )
    await expect_error(response, 400, "invalid_request")


# -- login ----------------------------------------------------------------------------


async def test_login_issues_a_bearer_token(app: Gateway):
    user = await new_user(app)
    response = await login(app, user["email"])
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header.get("kid")
    claims = jwt.decode(
        token,
        JWT_SECRET,
        algorithms=["HS256"],
        options={"require": ["sub", "iat", "exp"], "verify_aud": False},
    )
    assert claims["sub"] == user["id"]
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60


async def test_unknown_email_and_wrong_password_look_the_same(app: Gateway):
    user = await new_user(app)
    unknown = await expect_error(await login(app, unique_email()), 401, "invalid_credentials")
    wrong = await expect_error(
        await login(app, user["email"], PASSWORD + "!"), 401, "invalid_credentials"
    )
    assert unknown["message"] == wrong["message"]
    assert unknown == wrong


async def test_disabled_account_cannot_log_in(app: Gateway, db: asyncpg.Connection):
    user = await new_user(app)
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", uuid.UUID(user["id"]))
    error = await expect_error(await login(app, user["email"]), 403, "account_disabled")
    assert error["type"] == "permission_error"


async def test_long_passwords_are_not_truncated(app: Gateway):
    email = unique_email()
    assert (await register(app, email, "a" * 100)).status == 201
    await expect_error(await login(app, email, "a" * 72 + "b" * 28), 401, "invalid_credentials")
    await expect_error(await login(app, email, "a" * 72), 401, "invalid_credentials")
    assert (await login(app, email, "a" * 100)).status == 200


async def test_long_non_ascii_passwords_are_not_truncated(app: Gateway):
    email = unique_email()
    password = "ü" * 36 + "x" * 10  # 82 bytes, the first 72 all "ü"
    assert (await register(app, email, password)).status == 201
    await expect_error(await login(app, email, "ü" * 36 + "y" * 10), 401, "invalid_credentials")
    assert (await login(app, email, password)).status == 200


async def test_non_ascii_password(app: Gateway):
    email = unique_email()
    password = "pässwörd-日本語-🔑"
    assert (await register(app, email, password)).status == 201
    assert (await login(app, email, password)).status == 200
    await expect_error(await login(app, email, "passwörd-日本語-🔑"), 401, "invalid_credentials")


# -- /v1/me -----------------------------------------------------------------------------


async def test_me_describes_the_account(app: Gateway):
    user = await new_user(app)
    response = await me(app, await token_for(app, user["email"]))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert {"id", "email", "plan", "is_active", "created_at", "limits", "usage"} <= set(body)
    assert body["id"] == user["id"]
    assert body["email"] == user["email"]
    assert body["plan"] == "free"
    assert body["is_active"] is True
    assert parse_time(body["created_at"]) == parse_time(user["created_at"])
    assert body["limits"] == {
        "requests_per_minute": 10,
        "images_per_day": 50,
        "max_images_per_request": 4,
    }
    assert body["usage"] == {"today": 0}
    assert "password_hash" not in await response.text()


async def test_me_counts_todays_images_of_all_keys_before_they_are_flushed(
    app: Gateway, db: asyncpg.Connection
):
    user = await new_user(app)
    token = await token_for(app, user["email"])
    user_id = uuid.UUID(user["id"])
    first, first_row = await issue_key(db, user_id=user_id, prefix=KEY_PREFIX, name="one")
    second, second_row = await issue_key(db, user_id=user_id, prefix=KEY_PREFIX, name="two")
    stranger = await new_user(app)
    other, _ = await issue_key(
        db, user_id=uuid.UUID(stranger["id"]), prefix=KEY_PREFIX, name="other"
    )
    assert (await app.generate(first, n=2)).status == 200
    assert (await app.generate(second, n=3)).status == 200
    assert (await app.generate(other, n=4)).status == 200  # someone else's
    unflushed = await db.fetchval(
        "SELECT count(*) FROM usage WHERE api_key_id = ANY($1::uuid[])",
        [first_row["id"], second_row["id"]],
    )
    assert unflushed == 0  # still only in Redis
    response = await me(app, token)
    assert response.status == 200, await response.text()
    assert (await response.json())["usage"] == {"today": 5}
    await app.flush()
    flushed = await db.fetchval(
        "SELECT sum(image_count) FROM usage WHERE api_key_id = ANY($1::uuid[]) AND usage_date = $2",
        [first_row["id"], second_row["id"]],
        today(),
    )
    assert flushed == 5
    assert (await (await me(app, token)).json())["usage"] == {"today": 5}


# -- account tokens ----------------------------------------------------------------------


async def _forgery_setup(app: Gateway) -> tuple[dict[str, Any], str]:
    """Claims and kid of a real token, to forge from (so extra claims are kept)."""
    user = await new_user(app)
    token = await token_for(app, user["email"])
    claims = jwt.decode(token, options={"verify_signature": False})
    return claims, jwt.get_unverified_header(token)["kid"]


def _fresh(claims: dict[str, Any], **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    out = {**claims, "iat": now, "exp": now + 3600}
    out.update(changes)
    return out


def _without(claims: dict[str, Any], name: str) -> dict[str, Any]:
    out = _fresh(claims)
    del out[name]
    return out


def _alg_none(claims: dict[str, Any], kid: str) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return (
        b64url(json.dumps(header).encode())
        + "."
        + b64url(json.dumps(_fresh(claims)).encode())
        + "."
    )


async def test_a_hand_built_token_is_accepted(app: Gateway):
    """The control for the forgeries below: only what each one changes is wrong."""
    claims, kid = await _forgery_setup(app)
    response = await me(app, sign(_fresh(claims), JWT_SECRET, "HS256", kid))
    assert response.status == 200, await response.text()
    assert (await response.json())["id"] == claims["sub"]


FORGERIES: dict[str, Callable[[dict[str, Any], str], str]] = {
    "alg_none": _alg_none,
    "other_secret": lambda c, kid: sign(
        _fresh(c), "another-secret-cccccccccccccccccccccccccccc", "HS256", kid
    ),
    "hs512": lambda c, kid: sign(_fresh(c), JWT_SECRET, "HS512", kid),
    "hs384": lambda c, kid: sign(_fresh(c), JWT_SECRET, "HS384", kid),
    "expired": lambda c, kid: sign(
        _fresh(c, iat=int(time.time()) - 7200, exp=int(time.time()) - 300),
        JWT_SECRET,
        "HS256",
        kid,
    ),
    "no_exp": lambda c, kid: sign(_without(c, "exp"), JWT_SECRET, "HS256", kid),
    "no_iat": lambda c, kid: sign(_without(c, "iat"), JWT_SECRET, "HS256", kid),
    "no_sub": lambda c, kid: sign(_without(c, "sub"), JWT_SECRET, "HS256", kid),
    "unknown_kid": lambda c, kid: sign(_fresh(c), JWT_SECRET, "HS256", kid + "-unknown"),
    "garbage": lambda c, kid: "garbage",
    "three_garbage_parts": lambda c, kid: "abc.def.ghi",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_bad_tokens_are_refused(app: Gateway, forgery: str):
    claims, kid = await _forgery_setup(app)
    token = FORGERIES[forgery](claims, kid)
    error = await expect_error(await me(app, token), 401, "invalid_token")
    assert error["type"] == "authentication_error"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ],
)
async def test_missing_token_is_refused(app: Gateway, headers: dict[str, str]):
    await expect_error(await app.client.get("/v1/me", headers=headers), 401, "invalid_token")


async def test_an_api_key_is_not_an_account_token(app: Gateway, db: asyncpg.Connection):
    user = await new_user(app)
    key, _ = await issue_key(db, user_id=uuid.UUID(user["id"]), prefix=KEY_PREFIX, name="k")
    await expect_error(await me(app, key), 401, "invalid_token")


async def test_jwt_secret_rotation(make_app: MakeGateway):
    old = await make_app({"auth": {"jwt_secrets": [OLD_SECRET]}})
    new = await make_app({"auth": {"jwt_secrets": [NEW_SECRET, OLD_SECRET]}})
    user = await new_user(old)
    old_token = await token_for(old, user["email"])
    jwt.decode(old_token, OLD_SECRET, algorithms=["HS256"], options={"verify_aud": False})

    response = await me(new, old_token)  # issued before the rotation: still accepted
    assert response.status == 200, await response.text()
    assert (await response.json())["id"] == user["id"]

    new_token = await token_for(new, user["email"])
    claims = jwt.decode(new_token, NEW_SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["sub"] == user["id"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(new_token, OLD_SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert (await me(new, new_token)).status == 200
    # An instance that never learnt the new secret cannot verify the new tokens.
    await expect_error(await me(old, new_token), 401, "invalid_token")


# -- brute force -----------------------------------------------------------------------


def assert_retry_after(response: Any) -> int:
    value = response.headers.get("Retry-After")
    assert value is not None, "429 without Retry-After"
    assert value.isdigit(), value
    seconds = int(value)
    assert seconds >= 1
    return seconds


async def test_register_is_limited_per_ip(make_app: MakeGateway):
    app = await make_app({"auth": {"register_per_minute_per_ip": 3}})
    for _ in range(3):
        assert (await register(app, unique_email())).status == 201
    response = await register(app, unique_email())
    error = await expect_error(response, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert assert_retry_after(response) <= 60


async def test_login_is_limited_per_ip(make_app: MakeGateway):
    app = await make_app({"auth": {"login_per_minute_per_ip": 3}})
    user = await new_user(app)
    for _ in range(3):
        assert (await login(app, user["email"])).status == 200
    response = await login(app, user["email"])
    await expect_error(response, 429, "rate_limit_exceeded")
    assert assert_retry_after(response) <= 60
    other = await login(app, unique_email())  # any account, from the same address
    await expect_error(other, 429, "rate_limit_exceeded")


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_app: MakeGateway):
    app = await make_app({"auth": {"register_per_minute_per_ip": 2}})  # 127.0.0.1: untrusted
    for n in (1, 2):
        response = await register(
            app, unique_email(), headers={"X-Forwarded-For": f"203.0.113.{n}"}
        )
        assert response.status == 201, await response.text()
    response = await register(app, unique_email(), headers={"X-Forwarded-For": "203.0.113.3"})
    await expect_error(response, 429, "rate_limit_exceeded")
    assert_retry_after(response)


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(make_app: MakeGateway):
    app = await make_app(
        {"auth": {"register_per_minute_per_ip": 2, "trusted_proxies": ["127.0.0.1/32"]}}
    )
    first = {"X-Forwarded-For": "203.0.113.10"}
    for _ in range(2):
        assert (await register(app, unique_email(), headers=first)).status == 201
    response = await register(app, unique_email(), headers=first)
    await expect_error(response, 429, "rate_limit_exceeded")
    assert_retry_after(response)
    second = {"X-Forwarded-For": "203.0.113.11"}  # another client: a budget of its own
    assert (await register(app, unique_email(), headers=second)).status == 201


async def test_the_rightmost_untrusted_forwarded_address_is_the_client(make_app: MakeGateway):
    app = await make_app(
        {
            "auth": {
                "register_per_minute_per_ip": 2,
                "trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"],
            }
        }
    )
    # The client may prepend anything; the proxies append what they saw.
    for spoofed in ("192.0.2.1", "192.0.2.2"):
        headers = {"X-Forwarded-For": f"{spoofed}, 198.51.100.7, 10.0.0.5"}
        assert (await register(app, unique_email(), headers=headers)).status == 201
    headers = {"X-Forwarded-For": "192.0.2.3, 198.51.100.7, 10.0.0.5"}
    await expect_error(
        await register(app, unique_email(), headers=headers), 429, "rate_limit_exceeded"
    )
    headers = {"X-Forwarded-For": "198.51.100.8, 10.0.0.5"}
    assert (await register(app, unique_email(), headers=headers)).status == 201


async def test_failed_logins_delay_the_account(app: Gateway):
    # The test app: login_failures_before_delay is the default 5, per-IP budgets are high.
    user = await new_user(app)
    bystander = await new_user(app)
    for _ in range(5):
        await expect_error(
            await login(app, user["email"], "wrong password"), 401, "invalid_credentials"
        )
    response = await login(app, user["email"])  # even the right password must wait
    error = await expect_error(response, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert_retry_after(response)
    response = await login(app, user["email"], "wrong password")
    await expect_error(response, 429, "rate_limit_exceeded")
    assert_retry_after(response)
    assert (await login(app, bystander["email"])).status == 200  # another account: unaffected


async def test_failed_login_threshold_is_configurable(make_app: MakeGateway):
    app = await make_app({"auth": {"login_failures_before_delay": 2}})
    user = await new_user(app)
    for _ in range(2):
        await expect_error(await login(app, user["email"], "nope-nope"), 401, "invalid_credentials")
    response = await login(app, user["email"])
    await expect_error(response, 429, "rate_limit_exceeded")
    assert_retry_after(response)
