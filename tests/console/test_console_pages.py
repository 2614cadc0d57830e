"""The web console's pages and forms, without a browser: sessions, CSRF, keys, usage,
operators. (tests/console/test_console_browser.py drives the same pages in Chromium.)"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from gateway.accounts.recovery import create_reset_link
from tests.support.accounts import PASSWORD
from tests.support.config import ADMIN_TOKEN
from tests.support.console import ConsoleUser, csrf_of, shown_key
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import expect_error


def new_email() -> str:
    return f"console-{uuid.uuid4().hex[:12]}@example.com"


Users = Callable[[Gateway], ConsoleUser]


async def signed_up(
    users: Users, gateway: Gateway, email: str | None = None
) -> tuple[ConsoleUser, str]:
    user = users(gateway)
    email = email or new_email()
    response = await user.submit(
        "/console/signup", "/console/signup", {"email": email, "password": PASSWORD}
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/console/keys?done=welcome"
    return user, email


async def created_key(user: ConsoleUser, name: str = "laptop") -> str:
    response = await user.submit("/console/keys", "/console/keys", {"name": name})
    assert response.status == 201, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    return shown_key(await response.text())


async def dev_app(make_app: MakeGateway, extra: dict[str, Any] | None = None) -> Gateway:
    return await make_app(extra, dev=True)


async def test_console_off_is_not_served(make_app: MakeGateway) -> None:
    gateway = await make_app({"console": {"enabled": False}})
    await expect_error(await gateway.client.get("/console/login"), 404, "not_found")


async def test_pages_carry_a_strict_csp_and_no_inline_code(make_app: MakeGateway) -> None:
    gateway = await make_app()
    response = await gateway.client.get("/console/login")
    assert response.status == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    page = await response.text()
    assert "<script>" not in page
    assert "style=" not in page
    assert "<style" not in page
    static = await gateway.client.get("/console/static/console.js")
    assert static.status == 200
    response = await gateway.client.get("/console", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/console/")


async def test_the_session_cookie_is_httponly_strict_and_secure_outside_dev(
    make_app: MakeGateway,
) -> None:
    gateway = await make_app()
    form = await gateway.client.get("/console/signup")
    nonce = form.cookies["gw_console_csrf"]
    assert nonce["httponly"]
    assert nonce["secure"]
    assert nonce["samesite"] == "Strict"
    # Over plain HTTP a client keeps Secure cookies to itself: sent here by hand.
    response = await gateway.client.post(
        "/console/signup",
        data={"csrf": csrf_of(await form.text()), "email": new_email(), "password": PASSWORD},
        headers={"Cookie": f"gw_console_csrf={nonce.value}"},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    cookie = response.cookies["gw_console"]
    assert cookie["httponly"]
    assert cookie["secure"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/console"


async def test_a_form_from_another_site_is_refused(
    make_app: MakeGateway, console_user: Users
) -> None:
    gateway = await dev_app(make_app)
    user, _ = await signed_up(console_user, gateway)
    refusals = [
        await user.submit(
            "/console/keys",
            "/console/keys",
            {"name": "x"},
            headers={"Origin": "https://evil.example"},
        ),
        await user.submit(
            "/console/keys",
            "/console/keys",
            {"name": "x"},
            headers={"Sec-Fetch-Site": "cross-site"},
        ),
        await user.submit(
            "/console/keys", "/console/keys", {"name": "x"}, headers={"Sec-Fetch-Site": "same-site"}
        ),
        await gateway.client.post("/console/keys", data={"name": "x"}),
        await gateway.client.post("/console/keys", data={"name": "x", "csrf": "0" * 64}),
    ]
    for response in refusals:
        assert response.status == 403
        assert "not sent from this console" in await response.text()
    status, page = await user.get("/console/keys")
    assert status == 200
    assert "You have no keys yet." in page


async def test_keys_create_use_rotate_revoke(make_app: MakeGateway, console_user: Users) -> None:
    gateway = await dev_app(make_app)
    user, _ = await signed_up(console_user, gateway)
    key = await created_key(user)
    assert (await gateway.generate(key)).status == 200
    _, page = await user.get("/console/keys")
    assert key[:12] in page
    assert key not in page
    key_id = page.split("/console/keys/", 1)[1].split("/", 1)[0]

    response = await user.submit(
        "/console/keys", f"/console/keys/{key_id}/rotate", {"grace_seconds": "3600"}
    )
    assert response.status == 201
    new_key = shown_key(await response.text())
    assert (await gateway.generate(key)).status == 200  # within its grace period
    assert (await gateway.generate(new_key)).status == 200

    _status, page = await user.get("/console/keys")
    new_id = next(
        part.split("/", 1)[0]
        for part in page.split("/console/keys/")[1:]
        if not part.startswith(key_id)
    )
    asked = await user.submit("/console/keys", f"/console/keys/{new_id}/revoke")
    assert asked.status == 200
    assert "Revoke this key?" in await asked.text()
    assert (await gateway.generate(new_key)).status == 200  # nothing revoked yet
    done = await user.submit("/console/keys", f"/console/keys/{new_id}/revoke", {"confirm": "yes"})
    assert (done.status, done.headers["Location"]) == (303, "/console/keys?done=revoked")
    await expect_error(await gateway.generate(new_key), 401, "api_key_revoked")


async def test_usage_counts_todays_images(make_app: MakeGateway, console_user: Users) -> None:
    gateway = await dev_app(make_app)
    user, _ = await signed_up(console_user, gateway)
    key = await created_key(user)
    for _ in range(3):
        assert (await gateway.generate(key)).status == 200
    status, page = await user.get("/console/usage")
    assert status == 200
    assert 'data-today="3"' in page
    assert "3 in total" in page  # the chart's title


async def test_login_logout_and_the_login_throttle(
    make_app: MakeGateway, console_user: Users
) -> None:
    gateway = await dev_app(make_app, {"auth": {"login_per_minute_per_ip": 2}})
    _, email = await signed_up(console_user, gateway)
    other = console_user(gateway)
    wrong = await other.submit(
        "/console/login", "/console/login", {"email": email, "password": "not it"}
    )
    assert wrong.status == 401
    right = await other.submit(
        "/console/login", "/console/login", {"email": email, "password": PASSWORD}
    )
    assert (right.status, right.headers["Location"]) == (303, "/console/keys")
    assert (await other.get("/console/keys"))[0] == 200
    out = await other.submit("/console/keys", "/console/logout")
    assert out.status == 303
    assert out.cookies["gw_console"].value == ""  # deleted
    status, _ = await other.get("/console/keys")
    assert status == 303
    throttled = await other.submit(
        "/console/login", "/console/login", {"email": email, "password": PASSWORD}
    )
    assert throttled.status == 429
    assert "Retry-After" in throttled.headers


async def test_change_password(make_app: MakeGateway, console_user: Users) -> None:
    gateway = await dev_app(make_app)
    user, email = await signed_up(console_user, gateway)
    wrong = await user.submit(
        "/console/password", "/console/password", {"current": "nope nope", "new": "a new password"}
    )
    assert wrong.status == 403
    api = await gateway.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    other_session = (await api.json())["access_token"]
    ok = await user.submit(
        "/console/password", "/console/password", {"current": PASSWORD, "new": "a new password"}
    )
    assert ok.status == 200
    assert "Your password was changed." in await ok.text()
    response = await gateway.client.post(
        "/v1/auth/login", json={"email": email, "password": "a new password"}
    )
    assert response.status == 200
    # The browser that changed it stays signed in; every other session has ended.
    status, _ = await user.get("/console/keys")
    assert status == 200
    me = await gateway.client.get("/v1/me", headers={"Authorization": f"Bearer {other_session}"})
    await expect_error(me, 401, "invalid_token")


async def test_operator_pages_need_an_operator(make_app: MakeGateway, console_user: Users) -> None:
    gateway = await dev_app(make_app)
    user, _ = await signed_up(console_user, gateway)
    status, page = await user.get("/console/admin/users")
    assert status == 403
    assert "for operators" in page
    anonymous = console_user(await dev_app(make_app))
    status, _ = await anonymous.get("/console/admin/users")
    assert status == 303


async def test_an_operator_disables_a_user_and_sets_key_limits(
    make_app: MakeGateway, console_user: Users, db: asyncpg.Connection
) -> None:
    operator_email = new_email()
    gateway = await dev_app(make_app, {"admin": {"console_emails": [operator_email.upper()]}})
    customer, customer_email = await signed_up(console_user, gateway)
    key = await created_key(customer)
    operator, _ = await signed_up(console_user, gateway, operator_email)

    status, page = await operator.get(f"/console/admin/users?q={customer_email[:14]}")
    assert status == 200
    assert customer_email in page
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", customer_email)
    key_id = await db.fetchval("SELECT id FROM api_keys WHERE user_id = $1", user_id)
    page_path = f"/console/admin/users/{user_id}"

    limits = await operator.submit(
        page_path,
        f"/console/admin/keys/{key_id}/limits",
        {"user": str(user_id), "requests_per_minute": "", "images_per_day": "7"},
    )
    assert limits.status == 303
    response = await gateway.generate(key)
    assert response.headers["X-RateLimit-Limit-Images"] == "7"

    bad = await operator.submit(
        page_path,
        f"/console/admin/keys/{key_id}/limits",
        {"user": str(user_id), "images_per_day": "-1"},
    )
    assert bad.status == 400
    assert "images_per_day" in await bad.text()

    plan = await operator.submit(page_path, f"{page_path}/plan", {"plan": "pro"})
    assert plan.status == 303
    assert await db.fetchval("SELECT plan FROM users WHERE id = $1", user_id) == "pro"
    unknown = await operator.submit(page_path, f"{page_path}/plan", {"plan": "gold"})
    assert unknown.status == 400

    disabled = await operator.submit(page_path, f"{page_path}/state", {"active": "false"})
    assert disabled.status == 303
    await expect_error(await gateway.generate(key), 403, "account_disabled")
    status, page = await customer.get("/console/keys")
    assert status == 303  # the disabled user's session ends too

    status, page = await operator.get("/console/admin/audit")
    assert status == 200
    assert f"console:{operator_email}" in page
    assert "update_user" in page
    status, page = await operator.get(f"/console/admin/usage?email={customer_email.upper()}")
    assert status == 200
    assert customer_email in page
    status, page = await operator.get("/console/admin/usage?email=nobody-has-this-address")
    assert status == 200
    assert customer_email not in page
    status, page = await operator.get("/console/admin/usage?email=a%00b")  # Postgres: no NUL
    assert status == 200
    assert "must not hold control characters" in page


async def test_the_admin_token_opens_the_operator_pages(
    make_app: MakeGateway, console_user: Users
) -> None:
    gateway = await dev_app(make_app)
    operator = console_user(gateway)
    wrong = await operator.submit(
        "/console/admin/login", "/console/admin/login", {"token": "not the token at all"}
    )
    assert wrong.status == 401
    right = await operator.submit(
        "/console/admin/login", "/console/admin/login", {"token": ADMIN_TOKEN}
    )
    assert (right.status, right.headers["Location"]) == (303, "/console/admin/users")
    assert (await operator.get("/console/admin/users"))[0] == 200
    # Not a user: the customer pages send it back, the account API refuses its token.
    status, _ = await operator.get("/console/keys")
    assert status == 303
    token = right.cookies["gw_console"].value
    response = await gateway.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    await expect_error(response, 401, "invalid_token")


async def test_an_operator_revokes_a_key(
    make_app: MakeGateway, console_user: Users, db: asyncpg.Connection
) -> None:
    gateway = await dev_app(make_app)
    customer, email = await signed_up(console_user, gateway)
    key = await created_key(customer)
    operator = console_user(gateway)
    await operator.submit("/console/admin/login", "/console/admin/login", {"token": ADMIN_TOKEN})
    key_id = await db.fetchval(
        "SELECT k.id FROM api_keys k JOIN users u ON u.id = k.user_id WHERE u.email = $1", email
    )
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", email)
    response = await operator.submit(
        f"/console/admin/users/{user_id}", f"/console/admin/keys/{key_id}/revoke"
    )
    assert response.status == 303
    await expect_error(await gateway.generate(key), 401, "api_key_revoked")
    actor = await db.fetchval("SELECT actor FROM admin_audit_log WHERE target_id = $1", key_id)
    assert actor == "console:admin-token"


async def test_reset_links_and_the_operator_log_in_when_off(
    make_app: MakeGateway, console_user: Users
) -> None:
    gateway = await dev_app(make_app, {"admin": {"token": ""}})
    user = console_user(gateway)
    status, _ = await user.get("/console/admin/login")
    assert status == 404
    response = await user.submit(
        "/console/reset?token=abc", "/console/reset", {"token": "abc", "new": "long enough 1"}
    )
    assert response.status == 400
    assert "not valid" in await response.text()


async def test_a_reset_link_sets_a_password_once(
    make_app: MakeGateway, console_user: Users, db: asyncpg.Connection
) -> None:
    gateway = await dev_app(make_app)
    _, email = await signed_up(console_user, gateway)
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", email)
    link = await create_reset_link(db, user_id, now=dt.datetime.now(dt.UTC))
    visitor = console_user(gateway)
    path = f"/console/reset?token={link.token}"

    response = await visitor.submit(
        path, "/console/reset", {"token": link.token, "new": "reset pw 1"}
    )

    assert response.status == 303
    assert response.headers["Location"] == "/console/login?done=password-set"
    login = await gateway.client.post(
        "/v1/auth/login", json={"email": email, "password": "reset pw 1"}
    )
    assert login.status == 200
    again = await visitor.submit(path, "/console/reset", {"token": link.token, "new": "reset pw 2"})
    assert again.status == 400


async def test_an_unknown_console_page_is_an_html_404(make_app: MakeGateway) -> None:
    gateway = await make_app()
    response = await gateway.client.get("/console/no-such-page")
    assert response.status == 404
    assert response.content_type == "text/html"
    assert "Content-Security-Policy" in response.headers
