"""API keys managed by their owners: create, list, revoke, rotate (account token auth)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from gateway.keys.format import hash_key
from tests.support.accounts import Account, new_account, new_key
from tests.support.config import KEY_PREFIX
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import expect_error, parse_time
from tests.support.waiting import within_a_second

CREATED_FIELDS = {"id", "name", "key", "prefix", "created_at", "expires_at"}
LISTED_FIELDS = {"id", "name", "prefix", "is_active", "created_at", "last_used_at", "expires_at"}


def refused(
    gateway: Gateway, key: str, status: int, *codes: str
) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        response = await gateway.generate(key)
        body = await response.json()
        code = body.get("error", {}).get("code") if response.status != 200 else None
        return True if response.status == status and code in codes else (response.status, code)

    return check


async def create(gateway: Gateway, account: Account, body: Any) -> Any:
    return await gateway.client.post("/v1/keys", json=body, headers=account.headers)


async def rotate(gateway: Gateway, account: Account, key_id: str, body: Any) -> Any:
    return await gateway.client.post(
        f"/v1/keys/{key_id}/rotate", json=body, headers=account.headers
    )


async def list_keys(gateway: Gateway, account: Account) -> list[dict[str, Any]]:
    response = await gateway.client.get("/v1/keys", headers=account.headers)
    assert response.status == 200, await response.text()
    data: list[dict[str, Any]] = (await response.json())["data"]
    return data


async def warm(key: str, *gateways: Gateway) -> None:
    """Make every instance hold the key in memory and listen for invalidations."""
    for gateway in gateways:
        response = await gateway.generate(key)
        assert response.status == 200, await response.text()
        await asyncio.wait_for(gateway.services.keys.subscribed.wait(), 5)


# -- create -----------------------------------------------------------------------------


async def test_create_key(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    response = await create(app, account, {"name": "my laptop"})
    assert response.status == 201, await response.text()
    body = await response.json()
    assert set(body) >= CREATED_FIELDS
    assert "key_hash" not in body
    uuid.UUID(body["id"])
    assert body["name"] == "my laptop"
    assert body["key"].startswith(KEY_PREFIX)
    assert body["prefix"].startswith(KEY_PREFIX)
    assert body["prefix"] != body["key"]
    assert body["expires_at"] is None
    assert abs((dt.datetime.now(dt.UTC) - parse_time(body["created_at"])).total_seconds()) < 300
    row = await db.fetchrow(
        "SELECT user_id, key_hash, is_active FROM api_keys WHERE id = $1", uuid.UUID(body["id"])
    )
    assert str(row["user_id"]) == account.id
    assert row["key_hash"] == hash_key(body["key"])  # only the hash is stored
    assert row["is_active"] is True
    assert (await app.generate(body["key"])).status == 200  # works at once


async def test_create_key_with_expiry(app: Gateway):
    account = await new_account(app)
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(microsecond=0)
    key = await new_key(app, account, expires_at=expires.isoformat())
    assert parse_time(key["expires_at"]) == expires
    assert (await app.generate(key["key"])).status == 200
    listed = {k["id"]: k for k in await list_keys(app, account)}
    assert parse_time(listed[key["id"]]["expires_at"]) == expires


async def test_create_key_with_expiry_in_another_timezone(app: Gateway):
    account = await new_account(app)
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    expires = (dt.datetime.now(zone) + dt.timedelta(days=1)).replace(microsecond=0)
    key = await new_key(app, account, expires_at=expires.isoformat())
    assert parse_time(key["expires_at"]) == expires  # the same instant


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "x" * 101}, {"name": 5}, {"name": None}, {"name": ["a"]}],
)
async def test_create_key_bad_name(app: Gateway, body: dict[str, Any]):
    account = await new_account(app)
    await expect_error(await create(app, account, body), 400, "invalid_request", "name")


async def test_create_key_name_of_100_characters(app: Gateway):
    account = await new_account(app)
    assert (await new_key(app, account, name="n" * 100))["name"] == "n" * 100


@pytest.mark.parametrize(
    "expires_at",
    [
        "next week",
        "2020-01-01T00:00:00Z",  # past
        "2999-01-01T00:00:00",  # no timezone
        "2999-01-01",  # a date, not a datetime
        "2999-13-01T00:00:00Z",
        12345,
        True,
        ["2999-01-01T00:00:00Z"],
    ],
)
async def test_create_key_bad_expires_at(app: Gateway, expires_at: Any):
    account = await new_account(app)
    response = await create(app, account, {"name": "k", "expires_at": expires_at})
    await expect_error(response, 400, "invalid_request", "expires_at")


async def test_create_key_just_expired_is_refused(app: Gateway):
    account = await new_account(app)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    response = await create(app, account, {"name": "k", "expires_at": past})
    await expect_error(response, 400, "invalid_request", "expires_at")


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b""])
async def test_create_key_body_that_is_not_a_json_object(app: Gateway, raw: bytes):
    account = await new_account(app)
    response = await app.client.post(
        "/v1/keys", data=raw, headers={**account.headers, "Content-Type": "application/json"}
    )
    await expect_error(response, 400, "invalid_request")


async def test_key_endpoints_need_an_account_token(app: Gateway):
    account = await new_account(app)
    key = await new_key(app, account)
    api_key = {"Authorization": f"Bearer {key['key']}"}  # an API key is not an account token
    for headers in ({}, api_key, {"Authorization": "Bearer nonsense"}):
        calls = [
            app.client.post("/v1/keys", json={"name": "k"}, headers=headers),
            app.client.get("/v1/keys", headers=headers),
            app.client.delete(f"/v1/keys/{key['id']}", headers=headers),
            app.client.post(f"/v1/keys/{key['id']}/rotate", json={}, headers=headers),
        ]
        for call in calls:
            await expect_error(await call, 401, "invalid_token")
    assert (await app.generate(key["key"])).status == 200  # untouched


async def test_active_key_cap(make_app: MakeGateway):
    app = await make_app({"auth": {"max_keys_per_user": 2}})
    account = await new_account(app)
    first = await new_key(app, account)
    await new_key(app, account)
    response = await create(app, account, {"name": "one too many"})
    await expect_error(response, 409, "too_many_keys")
    other = await new_account(app)  # the cap is per user
    await new_key(app, other)
    # Revoked keys are not active: revoking one makes room for another.
    response = await app.client.delete(f"/v1/keys/{first['id']}", headers=account.headers)
    assert response.status == 204, await response.text()
    await new_key(app, account)
    await expect_error(await create(app, account, {"name": "again"}), 409, "too_many_keys")


async def test_default_key_cap_is_ten(app: Gateway):
    account = await new_account(app)
    for i in range(10):
        await new_key(app, account, name=f"key {i}")
    await expect_error(await create(app, account, {"name": "eleventh"}), 409, "too_many_keys")


# -- list -------------------------------------------------------------------------------


async def test_list_keys_shows_no_secrets(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    first = await new_key(app, account, name="first")
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    second = await new_key(app, account, name="second", expires_at=expires.isoformat())
    other = await new_account(app)
    stranger = await new_key(app, other, name="not yours")

    response = await app.client.get("/v1/keys", headers=account.headers)
    assert response.status == 200, await response.text()
    text = await response.text()
    body = await response.json()
    assert set(body) >= {"data"}
    listed = {k["id"]: k for k in body["data"]}
    assert set(listed) == {first["id"], second["id"]}  # the caller's keys only
    for item in body["data"]:
        assert set(item) == LISTED_FIELDS
        assert item["is_active"] is True
        assert item["last_used_at"] is None
    assert listed[first["id"]]["name"] == "first"
    assert listed[first["id"]]["prefix"] == first["prefix"]
    assert listed[first["id"]]["expires_at"] is None
    assert parse_time(listed[second["id"]]["expires_at"]) == expires
    assert parse_time(listed[first["id"]]["created_at"]) == parse_time(first["created_at"])
    for key in (first, second, stranger):
        assert key["key"] not in text
    for key_hash in await db.fetch(
        "SELECT key_hash FROM api_keys WHERE user_id = $1", uuid.UUID(account.id)
    ):
        assert key_hash["key_hash"] not in text
    assert "key_hash" not in text


# -- revoke -----------------------------------------------------------------------------


async def test_revoke_reaches_every_instance_within_a_second(
    make_app: MakeGateway, db: asyncpg.Connection
):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    key = await new_key(first, account)
    await warm(key["key"], first, second)

    response = await first.client.delete(f"/v1/keys/{key['id']}", headers=account.headers)
    assert response.status == 204, await response.text()
    await within_a_second(
        refused(first, key["key"], 401, "api_key_revoked"),
        refused(second, key["key"], 401, "api_key_revoked"),
    )
    await expect_error(await second.generate(key["key"]), 401, "api_key_revoked")
    active = await db.fetchval("SELECT is_active FROM api_keys WHERE id = $1", uuid.UUID(key["id"]))
    assert active is False


@pytest.mark.parametrize("action", ["revoke", "rotate"])
@pytest.mark.parametrize("whose", ["someone_else", "unknown_uuid", "not_a_uuid"])
async def test_revoke_or_rotate_what_is_not_yours(app: Gateway, action: str, whose: str):
    owner = await new_account(app)
    key = await new_key(app, owner)
    await warm(key["key"], app)
    caller = await new_account(app)
    target = {
        "someone_else": key["id"],
        "unknown_uuid": str(uuid.uuid4()),
        "not_a_uuid": "not-a-uuid",
    }[whose]
    if action == "revoke":
        response = await app.client.delete(f"/v1/keys/{target}", headers=caller.headers)
    else:
        response = await rotate(app, caller, target, {})
    await expect_error(response, 404, "not_found")
    assert (await app.generate(key["key"])).status == 200  # the owner's key is untouched
    assert any(k["id"] == key["id"] and k["is_active"] for k in await list_keys(app, owner))
    assert [k["id"] for k in await list_keys(app, caller)] == []  # and no key was made


# -- rotate -----------------------------------------------------------------------------


async def test_rotate_without_grace_retires_the_old_key_at_once(
    make_app: MakeGateway, db: asyncpg.Connection
):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    old = await new_key(first, account, name="ci")
    await warm(old["key"], first, second)

    response = await rotate(first, account, old["id"], {})
    assert response.status == 201, await response.text()
    new = await response.json()
    assert set(new) >= CREATED_FIELDS
    assert "key_hash" not in new
    assert new["id"] != old["id"]
    assert new["key"] != old["key"]
    assert new["key"].startswith(KEY_PREFIX)
    retired = ("api_key_revoked", "api_key_expired")
    response = await first.generate(old["key"])  # the instance that rotated: at once
    assert response.status == 401, await response.text()
    code = (await response.json())["error"]["code"]
    assert code in retired
    await expect_error(response, 401, code)
    await within_a_second(refused(second, old["key"], 401, *retired))
    assert (await first.generate(new["key"])).status == 200
    assert (await second.generate(new["key"])).status == 200
    row = await db.fetchrow(
        "SELECT user_id, key_hash FROM api_keys WHERE id = $1", uuid.UUID(new["id"])
    )
    assert str(row["user_id"]) == account.id
    assert row["key_hash"] == hash_key(new["key"])


async def test_rotate_with_explicit_zero_grace(app: Gateway):
    account = await new_account(app)
    old = await new_key(app, account)
    await warm(old["key"], app)
    response = await rotate(app, account, old["id"], {"grace_seconds": 0})
    assert response.status == 201, await response.text()
    new = await response.json()
    response = await app.generate(old["key"])
    assert response.status == 401, await response.text()
    code = (await response.json())["error"]["code"]
    assert code in ("api_key_revoked", "api_key_expired")
    await expect_error(response, 401, code)
    assert (await app.generate(new["key"])).status == 200


async def test_rotate_with_grace_keeps_the_old_key_working(make_app: MakeGateway):
    first, second = await make_app(), await make_app()
    account = await new_account(first)
    old = await new_key(first, account)
    await warm(old["key"], first, second)
    response = await rotate(first, account, old["id"], {"grace_seconds": 3600})
    assert response.status == 201, await response.text()
    new = await response.json()
    assert new["id"] != old["id"]
    for gateway in (first, second):
        assert (await gateway.generate(new["key"])).status == 200
        assert (await gateway.generate(old["key"])).status == 200
    listed = {k["id"] for k in await list_keys(first, account)}
    assert {old["id"], new["id"]} <= listed


async def test_rotate_with_the_longest_grace(app: Gateway):
    account = await new_account(app)
    old = await new_key(app, account)
    response = await rotate(app, account, old["id"], {"grace_seconds": 604800})
    assert response.status == 201, await response.text()
    assert (await app.generate(old["key"])).status == 200


@pytest.mark.parametrize("grace", [-1, 604801, "60", 1.5, True, [60], {"s": 1}])
async def test_rotate_bad_grace(app: Gateway, grace: Any):
    account = await new_account(app)
    old = await new_key(app, account)
    response = await rotate(app, account, old["id"], {"grace_seconds": grace})
    await expect_error(response, 400, "invalid_request", "grace_seconds")
    assert (await app.generate(old["key"])).status == 200  # nothing happened
