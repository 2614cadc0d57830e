"""Log out, change a password, reset it with a one-time link (mailed when SMTP is set)."""

from __future__ import annotations

import hashlib
import time
import urllib.parse
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support.accounts import PASSWORD, Account, new_account
from tests.support.config import ADMIN_TOKEN
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import bearer, expect_error
from tests.support.smtp import smtp_sink

ADMIN = bearer(ADMIN_TOKEN)
NEW_PASSWORD = "a brand new passphrase"


async def login(gateway: Gateway, email: str, password: str) -> Any:
    return await gateway.client.post("/v1/auth/login", json={"email": email, "password": password})


async def token_of(gateway: Gateway, email: str, password: str = PASSWORD) -> str:
    response = await login(gateway, email, password)
    assert response.status == 200, await response.text()
    token: str = (await response.json())["access_token"]
    return token


async def me(gateway: Gateway, token: str) -> Any:
    return await gateway.client.get("/v1/me", headers=bearer(token))


async def reset_link(gateway: Gateway, user_id: str) -> dict[str, Any]:
    response = await gateway.client.post(f"/admin/users/{user_id}/password-reset", headers=ADMIN)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def token_in(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    assert parts.path == "/console/reset"
    (token,) = urllib.parse.parse_qs(parts.query)["token"]
    return token


async def use_link(gateway: Gateway, token: str, password: str = NEW_PASSWORD) -> Any:
    return await gateway.client.post(
        "/v1/auth/password-reset", json={"token": token, "new_password": password}
    )


# -- log out ----------------------------------------------------------------------------


async def test_logout_revokes_only_the_token_it_carries(app: Gateway):
    account = await new_account(app)
    other = await token_of(app, account.email)
    assert (await me(app, account.token)).status == 200

    response = await app.client.post("/v1/auth/logout", headers=account.headers)
    assert response.status == 204
    assert await response.read() == b""

    error = await expect_error(await me(app, account.token), 401, "invalid_token")
    assert "revoked" in error["message"]
    assert (await me(app, other)).status == 200
    # Logging out again with it is refused like any other use.
    await expect_error(
        await app.client.post("/v1/auth/logout", headers=account.headers), 401, "invalid_token"
    )


async def test_logout_keeps_the_token_on_the_denylist_until_it_expires(app: Gateway):
    account = await new_account(app)
    await app.client.post("/v1/auth/logout", headers=account.headers)
    digest = hashlib.sha256(account.token.encode()).hexdigest()
    entry = f"{app.services.config.redis.key_prefix}token-denied:{digest}"
    ttl = await app.services.redis.ttl(entry)
    lifetime = app.services.config.auth.token_ttl_seconds
    assert lifetime - 10 < ttl <= lifetime + 5
    # The token itself is never stored.
    assert await app.services.redis.exists(account.token) == 0


async def test_logout_needs_a_valid_token(app: Gateway):
    for headers in ({}, bearer("not-a-token")):
        response = await app.client.post("/v1/auth/logout", headers=headers)
        await expect_error(response, 401, "invalid_token")


# -- change the password -----------------------------------------------------------------


async def change(gateway: Gateway, account: Account, current: str, new: str) -> Any:
    return await gateway.client.post(
        "/v1/auth/password",
        json={"current_password": current, "new_password": new},
        headers=account.headers,
    )


async def test_a_password_change_ends_every_earlier_token(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    other = await token_of(app, account.email)
    before = await db.fetchval("SELECT password_hash FROM users WHERE email = $1", account.email)

    response = await change(app, account, PASSWORD, NEW_PASSWORD)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"

    for token in (account.token, other):
        error = await expect_error(await me(app, token), 401, "invalid_token")
        assert "password was changed" in error["message"]
    assert (await me(app, body["access_token"])).status == 200
    after = await db.fetchval("SELECT password_hash FROM users WHERE email = $1", account.email)
    assert after != before
    await expect_error(await login(app, account.email, PASSWORD), 401, "invalid_credentials")
    assert (await login(app, account.email, NEW_PASSWORD)).status == 200


async def test_a_wrong_current_password_changes_nothing(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    before = await db.fetchval("SELECT password_hash FROM users WHERE email = $1", account.email)
    response = await change(app, account, "not my password", NEW_PASSWORD)
    error = await expect_error(response, 403, "wrong_password", "current_password")
    assert error["type"] == "permission_error"
    assert (await me(app, account.token)).status == 200
    after = await db.fetchval("SELECT password_hash FROM users WHERE email = $1", account.email)
    assert after == before


async def test_wrong_current_passwords_are_throttled_like_failed_logins(make_app: MakeGateway):
    app = await make_app({"auth": {"login_failures_before_delay": 2}})
    account = await new_account(app)
    for _ in range(2):
        response = await change(app, account, "guess", NEW_PASSWORD)
        await expect_error(response, 403, "wrong_password", "current_password")
    response = await change(app, account, PASSWORD, NEW_PASSWORD)
    await expect_error(response, 429, "rate_limit_exceeded")
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"current_password": PASSWORD}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "x" * 129}, "new_password"),
        ({"new_password": NEW_PASSWORD}, "current_password"),
    ],
)
async def test_password_change_needs_a_good_body(app: Gateway, body: dict[str, Any], param: str):
    account = await new_account(app)
    response = await app.client.post("/v1/auth/password", json=body, headers=account.headers)
    await expect_error(response, 400, "invalid_request", param)


# -- reset links ---------------------------------------------------------------------------


async def test_a_reset_link_sets_the_password_once(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    link = await reset_link(app, account.id)
    assert link["emailed"] is False
    token = token_in(link["url"])
    assert link["url"] == f"/console/reset?token={token}"

    row = await db.fetchrow(
        "SELECT * FROM password_resets WHERE user_id = $1", uuid.UUID(account.id)
    )
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert row["used_at"] is None
    assert (row["expires_at"] - row["created_at"]).total_seconds() == pytest.approx(3600, abs=5)

    response = await use_link(app, token)
    assert response.status == 204, await response.text()
    await expect_error(await me(app, account.token), 401, "invalid_token")
    assert (await login(app, account.email, NEW_PASSWORD)).status == 200
    await expect_error(await login(app, account.email, PASSWORD), 401, "invalid_credentials")
    assert await db.fetchval(
        "SELECT used_at IS NOT NULL FROM password_resets WHERE token_hash = $1", row["token_hash"]
    )

    # Single use.
    again = await use_link(app, token, "yet another passphrase")
    await expect_error(again, 400, "invalid_reset_token")
    assert (await login(app, account.email, NEW_PASSWORD)).status == 200


async def test_using_a_link_uses_up_the_users_other_links(app: Gateway):
    account = await new_account(app)
    first = token_in((await reset_link(app, account.id))["url"])
    second = token_in((await reset_link(app, account.id))["url"])
    assert (await use_link(app, second)).status == 204
    await expect_error(await use_link(app, first), 400, "invalid_reset_token")


async def test_a_reset_link_lasts_one_hour(make_app: MakeGateway, db: asyncpg.Connection):
    clock = [time.time()]
    app = await make_app(wall_clock=lambda: clock[0])
    account = await new_account(app)
    late = token_in((await reset_link(app, account.id))["url"])
    in_time = token_in((await reset_link(app, account.id))["url"])
    before = await db.fetchval("SELECT password_hash FROM users WHERE email = $1", account.email)

    clock[0] += 3600
    await expect_error(await use_link(app, late), 400, "invalid_reset_token")
    assert (
        await db.fetchval("SELECT password_hash FROM users WHERE email = $1", account.email)
        == before
    )

    clock[0] -= 1
    assert (await use_link(app, in_time)).status == 204
    assert (
        await db.fetchval("SELECT password_hash FROM users WHERE email = $1", account.email)
        != before
    )


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"token": "made-up", "new_password": NEW_PASSWORD}, "invalid_reset_token", None),
        ({"token": "", "new_password": NEW_PASSWORD}, "invalid_request", "token"),
        ({"new_password": NEW_PASSWORD}, "invalid_request", "token"),
        ({"token": "made-up", "new_password": "short"}, "invalid_request", "new_password"),
    ],
)
async def test_reset_needs_a_good_token_and_password(
    app: Gateway, body: dict[str, Any], code: str, param: str | None
):
    response = await app.client.post("/v1/auth/password-reset", json=body)
    await expect_error(response, 400, code, param)


async def test_reset_links_are_mailed_when_smtp_is_set(make_app: MakeGateway):
    async with smtp_sink() as sink:
        app = await make_app(
            {
                "email": {
                    "smtp_url": sink.url,
                    "from_address": "accounts@gateway.test",
                    "public_url": "https://gateway.test/",
                }
            }
        )
        account = await new_account(app)
        link = await reset_link(app, account.id)
        await sink.received.wait()

    assert link["emailed"] is True
    token = token_in(link["url"])
    assert link["url"] == f"https://gateway.test/console/reset?token={token}"
    [(recipients, message)] = sink.messages
    assert recipients == [account.email]
    assert message["To"] == account.email
    assert message["From"] == "accounts@gateway.test"
    assert message["Subject"] == "Reset your password"
    assert link["url"] in message.get_content()
    assert (await use_link(app, token)).status == 204


async def test_a_mail_server_that_is_down_still_hands_the_link_over(make_app: MakeGateway):
    app = await make_app({"email": {"smtp_url": "smtp://127.0.0.1:1"}})
    account = await new_account(app)
    link = await reset_link(app, account.id)
    assert link["emailed"] is False
    assert (await use_link(app, token_in(link["url"]))).status == 204
