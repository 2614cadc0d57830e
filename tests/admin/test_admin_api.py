"""The admin API: find users, change plans and limits, disable accounts, daily usage, audit."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.support.accounts import PASSWORD, new_account, new_key
from tests.support.config import ADMIN_TOKEN
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import ANY, expect_error
from tests.support.usage import store_usage, today
from tests.support.waiting import within_a_second

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LISTED_KEY_FIELDS = {
    "id",
    "name",
    "prefix",
    "is_active",
    "created_at",
    "last_used_at",
    "expires_at",
}


def refused(gateway: Gateway, key: str, status: int, code: str) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        response = await gateway.generate(key)
        body = await response.json()
        got = body.get("error", {}).get("code") if response.status != 200 else None
        return True if (response.status, got) == (status, code) else (response.status, got)

    return check


def limit_is(
    gateway: Gateway, key: str, header: str, value: int
) -> Callable[[], Awaitable[object]]:
    """The limit the instance applies to the key, as its rate-limit headers tell
    (a 429 carries them too, so polling past the limit still observes it)."""

    async def check() -> object:
        response = await gateway.generate(key)
        await response.read()
        got = response.headers.get(header)
        return True if got == str(value) else (response.status, got)

    return check


async def warm(key: str, *gateways: Gateway) -> None:
    """Make every instance hold the key in memory and listen for invalidations."""
    for gateway in gateways:
        response = await gateway.generate(key)
        assert response.status == 200, await response.text()
        await asyncio.wait_for(gateway.services.keys.subscribed.wait(), 5)


async def patch_user(gateway: Gateway, user_id: str, body: Any) -> Any:
    return await gateway.client.patch(f"/admin/users/{user_id}", json=body, headers=ADMIN)


async def patch_key(gateway: Gateway, key_id: str, body: Any) -> Any:
    return await gateway.client.patch(f"/admin/keys/{key_id}", json=body, headers=ADMIN)


async def ok(response: Any) -> Any:
    assert response.status == 200, await response.text()
    return await response.json()


async def audit_rows(db: asyncpg.Connection, target_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT actor, action, target_id, details, created_at FROM admin_audit_log "
        "WHERE target_id = $1 ORDER BY created_at",
        uuid.UUID(target_id),
    )
    return rows


def admin_calls(user_id: str, key_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/admin/users?email=someone@example.com", None),
        ("GET", f"/admin/users/{user_id}", None),
        ("PATCH", f"/admin/users/{user_id}", {"plan": "pro"}),
        ("PATCH", f"/admin/keys/{key_id}", {"requests_per_minute": 1}),
        ("GET", f"/admin/usage?date={today().isoformat()}", None),
        ("GET", f"/admin/usage?start={today().isoformat()}&end={today().isoformat()}", None),
        ("GET", "/admin/users?limit=2", None),
        ("GET", f"/admin/audit?target={user_id}", None),
        ("POST", "/admin/users", {"email": f"new-{uuid.uuid4().hex}@example.com"}),
        ("POST", f"/admin/users/{user_id}/password-reset", None),
    ]


# -- who may call it ------------------------------------------------------------------------


async def test_admin_api_needs_the_admin_token(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    key = await new_key(app, account)
    refusals = [
        {},
        {"Authorization": "Bearer wrong-admin-token-0123456789"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer "},
        account.headers,  # a user's account token
        {"Authorization": f"Bearer {key['key']}"},  # an API key
    ]
    for method, path, body in admin_calls(account.id, key["id"]):
        for headers in refusals:
            response = await app.client.request(method, path, json=body, headers=headers)
            error = await expect_error(response, 401, "invalid_token")
            assert ADMIN_TOKEN not in error["message"]
    # Nothing was changed by the refused calls.
    row = await db.fetchrow("SELECT plan FROM users WHERE id = $1", uuid.UUID(account.id))
    assert row["plan"] == "free"
    rpm = await db.fetchval(
        "SELECT requests_per_minute FROM api_keys WHERE id = $1", uuid.UUID(key["id"])
    )
    assert rpm is None


async def test_unknown_ids_still_need_the_token_first(app: Gateway):
    for method, path, body in admin_calls(str(uuid.uuid4()), str(uuid.uuid4())):
        response = await app.client.request(method, path, json=body)
        await expect_error(response, 401, "invalid_token")


async def test_admin_api_is_off_without_a_token(make_app: MakeGateway):
    app = await make_app({"admin": {"token": ""}})
    account = await new_account(app)
    key = await new_key(app, account)
    calls = [
        *admin_calls(account.id, key["id"]),
        ("GET", "/admin/users", None),
        ("GET", "/admin/usage", None),
        ("GET", "/admin/anything/else", None),
    ]
    for method, path, body in calls:
        for headers in ({}, ADMIN, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
            response = await app.client.request(method, path, json=body, headers=headers)
            await expect_error(response, 404, "not_found")
    response = await app.generate(key["key"])
    assert response.status == 200
    assert response.headers["x-ratelimit-limit-requests"] == "10"  # no PATCH went through


async def test_admin_api_off_hides_even_other_methods(make_app: MakeGateway):
    """Off means absent: no 405 that would tell the admin routes exist."""
    app = await make_app({"admin": {"token": ""}})
    account = await new_account(app)
    for method, path in (
        ("DELETE", f"/admin/users/{account.id}"),
        ("POST", "/admin/users"),
        ("PUT", f"/admin/users/{account.id}"),
    ):
        for headers in ({}, ADMIN):
            response = await app.client.request(method, path, json={}, headers=headers)
            await expect_error(response, 404, "not_found")


# -- users --------------------------------------------------------------------------------


async def test_find_user_by_email(app: Gateway):
    account = await new_account(app)
    for query in (account.email, account.email.upper()):
        response = await app.client.get("/admin/users", params={"email": query}, headers=ADMIN)
        body = await ok(response)
        assert len(body["data"]) == 1
        user = body["data"][0]
        assert user["id"] == account.id
        assert user["email"] == account.email
        assert user["plan"] == "free"
        assert user["is_active"] is True
        assert "password_hash" not in user
        assert "password_hash" not in await response.text()
    response = await app.client.get(
        "/admin/users", params={"email": f"nobody-{uuid.uuid4().hex}@example.com"}, headers=ADMIN
    )
    assert (await ok(response))["data"] == []


async def test_get_user_with_keys_and_usage_today(app: Gateway):
    account = await new_account(app)
    first = await new_key(app, account, name="first")
    second = await new_key(app, account, name="second")
    assert (await app.generate(first["key"], n=1)).status == 200
    assert (await app.generate(second["key"], n=2)).status == 200
    await app.flush()
    other = await new_account(app)
    theirs = await new_key(app, other)
    assert (await app.generate(theirs["key"], n=4)).status == 200

    response = await app.client.get(f"/admin/users/{account.id}", headers=ADMIN)
    body = await ok(response)
    text = await response.text()
    assert body["id"] == account.id
    assert body["email"] == account.email
    assert body["plan"] == "free"
    assert body["is_active"] is True
    assert body["usage_today"] == 3
    assert body["credits"]["monthly"]["allowance"] is None  # the plan has no credit limit
    assert body["credits"]["total"] == 0
    keys = {k["id"]: k for k in body["keys"]}
    assert set(keys) == {first["id"], second["id"]}
    for item in body["keys"]:
        assert set(item) == LISTED_KEY_FIELDS
    assert keys[first["id"]]["name"] == "first"
    assert keys[first["id"]]["prefix"] == first["prefix"]
    for key in (first, second, theirs):
        assert key["key"] not in text
    assert "key_hash" not in text
    assert "password_hash" not in text


@pytest.mark.parametrize("user_id", ["6d1f0e52-3a5b-4c2e-9f41-0b7a9c2d8e13", "not-a-uuid"])
async def test_get_unknown_user(app: Gateway, user_id: str):
    response = await app.client.get(f"/admin/users/{user_id}", headers=ADMIN)
    await expect_error(response, 404, "not_found")


async def test_plan_change_reaches_another_instance_within_a_second(
    make_app: MakeGateway, db: asyncpg.Connection
):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    key = await new_key(first, account)
    await warm(key["key"], first, second)
    for gateway in (first, second):
        response = await gateway.generate(key["key"])
        assert response.headers["x-ratelimit-limit-requests"] == "10"

    body = await ok(await patch_user(first, account.id, {"plan": "pro"}))
    assert body["id"] == account.id
    assert body["plan"] == "pro"
    assert body["email"] == account.email
    assert body["is_active"] is True
    await within_a_second(
        limit_is(second, key["key"], "x-ratelimit-limit-requests", 600),
        limit_is(first, key["key"], "x-ratelimit-limit-requests", 600),
    )
    response = await second.generate(key["key"], n=10)  # pro allows 10 per request
    assert response.status == 200, await response.text()
    assert response.headers["x-ratelimit-limit-images"] == "5000"
    me = await ok(await second.client.get("/v1/me", headers=account.headers))
    assert me["plan"] == "pro"
    assert me["limits"]["requests_per_minute"] == 600
    assert await db.fetchval("SELECT plan FROM users WHERE id = $1", uuid.UUID(account.id)) == (
        "pro"
    )


@pytest.mark.parametrize("plan", ["enterprise", "", "PRO", 5, True, ["pro"], {"name": "pro"}])
async def test_unknown_plan(app: Gateway, plan: Any, db: asyncpg.Connection):
    account = await new_account(app)
    await expect_error(
        await patch_user(app, account.id, {"plan": plan}), 400, "invalid_request", "plan"
    )
    assert await db.fetchval("SELECT plan FROM users WHERE id = $1", uuid.UUID(account.id)) == (
        "free"
    )


async def test_disabling_a_user_reaches_every_instance_within_a_second(make_app: MakeGateway):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    key = await new_key(first, account)
    await warm(key["key"], first, second)

    body = await ok(await patch_user(first, account.id, {"is_active": False}))
    assert body["id"] == account.id
    assert body["is_active"] is False
    await within_a_second(
        refused(second, key["key"], 403, "account_disabled"),
        refused(first, key["key"], 403, "account_disabled"),
    )
    response = await second.client.post(
        "/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    await expect_error(response, 403, "account_disabled")


async def test_patch_unknown_user(app: Gateway):
    response = await patch_user(app, str(uuid.uuid4()), {"plan": "pro"})
    await expect_error(response, 404, "not_found")


# -- keys -----------------------------------------------------------------------------------


async def test_key_overrides_reach_another_instance_within_a_second(
    make_app: MakeGateway, db: asyncpg.Connection
):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    key = await new_key(first, account)
    await warm(key["key"], first, second)
    rpm, ipd = "x-ratelimit-limit-requests", "x-ratelimit-limit-images"

    assert (await patch_key(first, key["id"], {"requests_per_minute": 7})).status == 200
    await within_a_second(limit_is(second, key["key"], rpm, 7))

    assert (await patch_key(first, key["id"], {"images_per_day": 20})).status == 200
    await within_a_second(limit_is(second, key["key"], ipd, 20))
    response = await second.generate(key["key"])
    await response.read()
    assert response.headers[rpm] == "7"  # a PATCH changes only what it names

    assert (await patch_key(first, key["id"], {"requests_per_minute": None})).status == 200
    await within_a_second(limit_is(second, key["key"], rpm, 10))  # back to the plan's
    response = await second.generate(key["key"])
    await response.read()
    assert response.headers[ipd] == "20"

    assert (await patch_key(first, key["id"], {"images_per_day": None})).status == 200
    await within_a_second(limit_is(second, key["key"], ipd, 50))
    row = await db.fetchrow(
        "SELECT requests_per_minute, images_per_day FROM api_keys WHERE id = $1",
        uuid.UUID(key["id"]),
    )
    assert (row["requests_per_minute"], row["images_per_day"]) == (None, None)


async def test_key_override_is_enforced(make_app: MakeGateway):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    key = await new_key(first, account)
    await warm(key["key"], first, second)  # two requests in this minute
    assert (await patch_key(first, key["id"], {"requests_per_minute": 3})).status == 200
    await within_a_second(limit_is(second, key["key"], "x-ratelimit-limit-requests", 3))
    response = await second.generate(key["key"])
    await expect_error(response, 429, "rate_limit_exceeded")


async def test_deactivating_a_key_reaches_another_instance_within_a_second(
    make_app: MakeGateway,
):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    key = await new_key(first, account)
    spare = await new_key(first, account, name="spare")
    await warm(key["key"], first, second)
    await warm(spare["key"], first, second)
    assert (await patch_key(first, key["id"], {"is_active": False})).status == 200
    await within_a_second(
        refused(second, key["key"], 401, "api_key_revoked"),
        refused(first, key["key"], 401, "api_key_revoked"),
    )
    assert (await second.generate(spare["key"])).status == 200  # only that key


@pytest.mark.parametrize("field", ["requests_per_minute", "images_per_day"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, [10]])
async def test_bad_key_override(app: Gateway, db: asyncpg.Connection, field: str, value: Any):
    account = await new_account(app)
    key = await new_key(app, account)
    response = await patch_key(app, key["id"], {field: value})
    await expect_error(response, 400, "invalid_request", field)
    row = await db.fetchrow(
        "SELECT requests_per_minute, images_per_day FROM api_keys WHERE id = $1",
        uuid.UUID(key["id"]),
    )
    assert (row["requests_per_minute"], row["images_per_day"]) == (None, None)


# -- usage ----------------------------------------------------------------------------------


async def test_usage_of_today_includes_unflushed_counts(app: Gateway):
    account = await new_account(app)
    first = await new_key(app, account, name="first")
    second = await new_key(app, account, name="second")
    assert (await app.generate(first["key"], n=2)).status == 200
    assert (await app.generate(second["key"], n=3)).status == 200
    day = today().isoformat()

    body = await ok(await app.client.get("/admin/usage", params={"date": day}, headers=ADMIN))
    assert (body["start"], body["end"]) == (day, day)
    users = {u["user_id"]: u for u in body["users"]}
    assert users[account.id] == {
        "user_id": account.id,
        "email": account.email,
        "images": 5,
        "credits": 0,
    }
    keys = {k["api_key_id"]: k for k in body["keys"]}
    assert keys[first["id"]] == {
        "api_key_id": first["id"],
        "user_id": account.id,
        "images": 2,
        "credits": 0,
    }
    assert keys[second["id"]] == {
        "api_key_id": second["id"],
        "user_id": account.id,
        "images": 3,
        "credits": 0,
    }
    assert body["total"] >= 5


async def test_usage_of_an_earlier_day(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    first = await new_key(app, account, name="first")
    second = await new_key(app, account, name="second")
    other = await new_account(app)
    theirs = await new_key(app, other)
    day = today() - dt.timedelta(days=3)
    for key, images in ((first, 4), (second, 6), (theirs, 1)):
        await store_usage(db, key["id"], day, images)
    await store_usage(db, first["id"], day - dt.timedelta(days=1), 100)  # another day: not counted
    expected_total = await db.fetchval(
        "SELECT coalesce(sum(image_count), 0) FROM usage WHERE usage_date = $1", day
    )

    response = await app.client.get("/admin/usage", params={"date": day.isoformat()}, headers=ADMIN)
    body = await ok(response)
    assert (body["start"], body["end"]) == (day.isoformat(), day.isoformat())
    users = {u["user_id"]: u for u in body["users"]}
    assert users[account.id] == {
        "user_id": account.id,
        "email": account.email,
        "images": 10,
        "credits": 0,
    }
    assert users[other.id] == {"user_id": other.id, "email": other.email, "images": 1, "credits": 0}
    keys = {k["api_key_id"]: k for k in body["keys"]}
    assert keys[first["id"]]["images"] == 4
    assert keys[second["id"]]["images"] == 6
    assert keys[theirs["id"]] == {
        "api_key_id": theirs["id"],
        "user_id": other.id,
        "images": 1,
        "credits": 0,
    }
    assert body["total"] == expected_total


@pytest.mark.parametrize(
    "params",
    [
        {"date": ""},
        {"date": "yesterday"},
        {"date": "2024-02-30"},
        {"date": "1/2/2024"},
        {"start": "2024-02-30"},
        {"start": "2024-03-02", "end": "2024-03-01"},
        {"start": "2020-01-01", "end": "2024-01-01"},
    ],
)
async def test_usage_needs_a_good_date(app: Gateway, params: dict[str, str]):
    response = await app.client.get("/admin/usage", params=params, headers=ADMIN)
    await expect_error(response, 400, "invalid_request", ANY)


# -- audit ----------------------------------------------------------------------------------


async def test_every_change_is_audited(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    key = await new_key(app, account)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)

    assert (await patch_user(app, account.id, {"plan": "pro"})).status == 200
    rows = await audit_rows(db, account.id)
    assert len(rows) == 1
    row = rows[0]
    assert isinstance(row["actor"], str)
    assert row["actor"]
    assert isinstance(row["action"], str)
    assert row["action"]
    assert row["created_at"] >= before
    assert row["created_at"] <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    what = row["action"] + " " + (row["details"] or "")
    assert "pro" in what

    assert (await patch_user(app, account.id, {"is_active": False})).status == 200
    assert len(await audit_rows(db, account.id)) == 2

    assert (await patch_key(app, key["id"], {"requests_per_minute": 42})).status == 200
    rows = await audit_rows(db, key["id"])
    assert len(rows) == 1
    what = rows[0]["action"] + " " + (rows[0]["details"] or "")
    assert "42" in what
    assert rows[0]["actor"]

    leaked = await db.fetchval(
        "SELECT count(*) FROM admin_audit_log t WHERE strpos(t::text, $1) > 0", ADMIN_TOKEN
    )
    assert leaked == 0
