"""The admin API for accounts: paging users, creating them, reset links, the audit log,
usage over a range of days."""

from __future__ import annotations

import datetime as dt
import urllib.parse
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support.accounts import new_account, new_key
from tests.support.config import ADMIN_TOKEN
from tests.support.gateway import Gateway
from tests.support.http import bearer, expect_error
from tests.support.usage import store_usage, today

ADMIN = bearer(ADMIN_TOKEN)


async def ok(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def users_page(app: Gateway, **params: Any) -> Any:
    return await ok(await app.client.get("/admin/users", params=params, headers=ADMIN))


async def create(app: Gateway, body: Any) -> Any:
    return await app.client.post("/admin/users", json=body, headers=ADMIN)


# -- paging through users -----------------------------------------------------------------


async def test_users_page_by_cursor_oldest_first(app: Gateway):
    tag = uuid.uuid4().hex[:10]
    made = []
    for i in range(5):
        body = await ok(await create(app, {"email": f"Page-{tag}-{i}@Example.com"}), 201)
        made.append(body["id"])

    seen: list[str] = []
    more = []
    after = None
    while True:
        params = {"email_like": tag.upper(), "limit": 2, **({"after": after} if after else {})}
        page = await users_page(app, **params)
        seen += [u["id"] for u in page["data"]]
        more.append(page["has_more"])
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == made
    assert more == [True, True, False]

    everyone = await users_page(app, limit=1000)
    assert [u["id"] for u in everyone["data"] if u["id"] in made] == made


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"after": "not-an-id"}, "after"),
        ({"after": ""}, "after"),
        ({"after": str(uuid.uuid4())}, "after"),
        ({"email_like": "a\x00b"}, "email_like"),
    ],
)
async def test_users_page_needs_good_parameters(app: Gateway, params: Any, param: str):
    response = await app.client.get("/admin/users", params=params, headers=ADMIN)
    await expect_error(response, 400, "invalid_request", param)


# -- creating users ---------------------------------------------------------------------------


async def test_create_user(app: Gateway, db: asyncpg.Connection):
    email = f"made-{uuid.uuid4().hex[:8]}@example.com"
    body = await ok(await create(app, {"email": f"  {email.upper()} ", "plan": "pro"}), 201)
    assert set(body) == {
        "id",
        "email",
        "plan",
        "is_active",
        "created_at",
        "updated_at",
        "reset_link",
    }
    assert (body["email"], body["plan"], body["is_active"], body["reset_link"]) == (
        email,
        "pro",
        True,
        None,
    )
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(body["id"]))
    assert (row["email"], row["plan"], row["password_hash"]) == (email, "pro", None)
    audit = await db.fetch(
        "SELECT actor, action, details::text FROM admin_audit_log WHERE target_id = $1",
        row["id"],
    )
    assert [(r["actor"], r["action"]) for r in audit] == [("admin-token", "create_user")]

    again = await create(app, {"email": email})
    await expect_error(again, 409, "email_taken")


async def test_a_created_user_sets_a_password_with_its_link(app: Gateway, db: asyncpg.Connection):
    email = f"linked-{uuid.uuid4().hex[:8]}@example.com"
    body = await ok(await create(app, {"email": email, "reset_link": True}), 201)
    link = body["reset_link"]
    assert body["plan"] == "free"
    assert link["emailed"] is False
    expires = dt.datetime.fromisoformat(link["expires_at"])
    left = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < left <= dt.timedelta(hours=1)
    (token,) = urllib.parse.parse_qs(urllib.parse.urlsplit(link["url"]).query)["token"]
    password = "the first passphrase"
    response = await app.client.post(
        "/v1/auth/password-reset", json={"token": token, "new_password": password}
    )
    assert response.status == 204
    login = await app.client.post("/v1/auth/login", json={"email": email, "password": password})
    assert login.status == 200
    actions = await db.fetch(
        "SELECT action, details::text FROM admin_audit_log WHERE target_id = $1 "
        "ORDER BY created_at",
        uuid.UUID(body["id"]),
    )
    assert [r["action"] for r in actions] == ["create_user", "password_reset_link"]
    assert all(token not in r["details"] for r in actions)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "email"),
        ({"email": "no-at-sign"}, "email"),
        ({"email": "a b@example.com"}, "email"),
        ({"email": 7}, "email"),
        ({"email": "ok@example.com", "plan": "gold"}, "plan"),
        ({"email": "ok@example.com", "reset_link": "yes"}, "reset_link"),
    ],
)
async def test_create_user_needs_a_good_body(
    app: Gateway, db: asyncpg.Connection, body: Any, param: str
):
    await expect_error(await create(app, body), 400, "invalid_request", param)
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = 'ok@example.com'") == 0


async def test_reset_link_of_an_unknown_user(app: Gateway):
    for user_id in (str(uuid.uuid4()), "not-an-id"):
        response = await app.client.post(f"/admin/users/{user_id}/password-reset", headers=ADMIN)
        await expect_error(response, 404, "not_found")


# -- the audit log ------------------------------------------------------------------------------


async def audit(app: Gateway, **params: Any) -> Any:
    return await ok(await app.client.get("/admin/audit", params=params, headers=ADMIN))


async def test_audit_log_newest_first_by_target_and_actor(app: Gateway):
    account = await new_account(app)
    key = await new_key(app, account)
    for body in ({"plan": "pro"}, {"is_active": False}, {"is_active": True}):
        response = await app.client.patch(f"/admin/users/{account.id}", json=body, headers=ADMIN)
        assert response.status == 200
    response = await app.client.patch(
        f"/admin/keys/{key['id']}", json={"images_per_day": 7}, headers=ADMIN
    )
    assert response.status == 200

    entries = (await audit(app, target=account.id))["data"]
    assert [e["details"] for e in entries] == [
        {"is_active": True},
        {"is_active": False},
        {"plan": "pro"},
    ]
    assert {e["action"] for e in entries} == {"update_user"}
    assert {e["actor"] for e in entries} == {"admin-token"}
    assert {e["target_id"] for e in entries} == {account.id}
    assert set(entries[0]) == {"id", "actor", "action", "target_id", "details", "created_at"}

    first = await audit(app, target=account.id, limit=2)
    assert [e["id"] for e in first["data"]] == [e["id"] for e in entries[:2]]
    assert first["has_more"] is True
    rest = await audit(app, target=account.id, limit=2, after=first["data"][-1]["id"])
    assert [e["id"] for e in rest["data"]] == [entries[2]["id"]]
    assert rest["has_more"] is False

    newest = (await audit(app, actor="admin-token", limit=1))["data"]
    assert newest[0]["target_id"] == key["id"]
    assert newest[0]["details"] == {"images_per_day": 7}
    assert (await audit(app, actor="somebody-else"))["data"] == []


async def test_an_empty_audit_filter_is_no_filter(app: Gateway):
    account = await new_account(app)
    response = await app.client.patch(
        f"/admin/users/{account.id}", json={"plan": "pro"}, headers=ADMIN
    )
    assert response.status == 200
    unfiltered = await audit(app, limit=5)
    assert await audit(app, target="", actor="", after="", limit=5) == unfiltered
    assert unfiltered["data"][0]["target_id"] == account.id
    bad = await app.client.get("/admin/audit", params={"target": "nope"}, headers=ADMIN)
    await expect_error(bad, 400, "invalid_request", "target")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"target": "x"}, "target"),
        ({"after": "x"}, "after"),
        ({"after": str(uuid.uuid4())}, "after"),
        ({"limit": "0"}, "limit"),
        ({"actor": "a\x01"}, "actor"),
    ],
)
async def test_audit_log_needs_good_parameters(app: Gateway, params: Any, param: str):
    response = await app.client.get("/admin/audit", params=params, headers=ADMIN)
    await expect_error(response, 400, "invalid_request", param)


# -- usage over a range -------------------------------------------------------------------------


async def test_usage_over_a_range_of_days(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    small = await new_key(app, account, name="small")
    big = await new_key(app, account, name="big")
    other = await new_account(app)
    theirs = await new_key(app, other)
    # Days long past that no other test writes (the range's report covers every key,
    # whichever tests ran before).
    start = today() - dt.timedelta(days=2300)
    rows = [
        (small, start, 1),
        (small, start + dt.timedelta(days=1), 2),
        (big, start + dt.timedelta(days=1), 10),
        (theirs, start, 4),
        (big, start + dt.timedelta(days=2), 100),  # after the range
        (big, start - dt.timedelta(days=1), 100),  # before it
    ]
    for key, day, images in rows:
        await store_usage(db, key["id"], day, images)
    end = start + dt.timedelta(days=1)
    params = {"start": start.isoformat(), "end": end.isoformat()}
    body = await ok(await app.client.get("/admin/usage", params=params, headers=ADMIN))
    assert (body["start"], body["end"]) == (start.isoformat(), end.isoformat())
    assert body["keys"] == [
        {"api_key_id": big["id"], "user_id": account.id, "images": 10, "credits": 0},
        {"api_key_id": theirs["id"], "user_id": other.id, "images": 4, "credits": 0},
        {"api_key_id": small["id"], "user_id": account.id, "images": 3, "credits": 0},
    ]
    assert body["users"] == [
        {"user_id": account.id, "email": account.email, "images": 13, "credits": 0},
        {"user_id": other.id, "email": other.email, "images": 4, "credits": 0},
    ]
    assert body["models"] == [{"model": "local", "images": 17, "credits": 0}]
    assert body["total"] == 17
    assert body["data"] is None  # rows only with group_by
    by_day = await ok(
        await app.client.get("/admin/usage", params={**params, "group_by": "day"}, headers=ADMIN)
    )
    assert [(r["date"], r["images"]) for r in by_day["data"]] == [
        (start.isoformat(), 5),
        (end.isoformat(), 12),
    ]


async def test_usage_defaults_to_today(app: Gateway):
    account = await new_account(app)
    key = await new_key(app, account)
    assert (await app.generate(key["key"], n=3)).status == 200
    body = await ok(await app.client.get("/admin/usage", headers=ADMIN))
    assert (body["start"], body["end"]) == (today().isoformat(), today().isoformat())
    keys = {k["api_key_id"]: k["images"] for k in body["keys"]}
    assert keys[key["id"]] == 3
