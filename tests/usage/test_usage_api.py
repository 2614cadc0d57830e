"""GET /v1/usage: a user's images per key, day and model, today's unflushed counts included."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support.accounts import Account, new_account, new_key
from tests.support.credits import CREDITS
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import ANY, expect_error
from tests.support.usage import store_usage, today, usage_rows


async def get_usage(gateway: Gateway, account: Account, **params: str) -> Any:
    return await gateway.client.get("/v1/usage", params=params, headers=account.headers)


async def usage(gateway: Gateway, account: Account, **params: str) -> dict[str, Any]:
    response = await get_usage(gateway, account, **params)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    assert set(body) >= {"data", "total"}
    for row in body["data"]:
        assert set(row) == {"date", "api_key_id", "model", "images", "credits"}
    assert body["total"] == sum(row["images"] for row in body["data"])
    return body


def rows(body: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {(r["date"], r["api_key_id"], r["images"]) for r in body["data"]}


def days_ago(n: int) -> dt.date:
    return today() - dt.timedelta(days=n)


async def test_today_includes_unflushed_images(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    key = await new_key(app, account)
    assert (await app.generate(key["key"], n=2)).status == 200
    assert (await app.generate(key["key"], n=3)).status == 200
    assert await usage_rows(db, uuid.UUID(key["id"])) == {}  # not flushed yet

    body = await usage(app, account)
    assert body["data"] == [
        {
            "date": today().isoformat(),
            "api_key_id": key["id"],
            "model": "local",
            "images": 5,
            "credits": 0,
        }
    ]
    assert body["total"] == 5

    await app.flush()
    assert await usage_rows(db, uuid.UUID(key["id"])) == {today(): 5}
    after = await usage(app, account)
    assert after["data"] == body["data"]
    assert after["total"] == 5


async def test_unflushed_counts_add_to_flushed_ones(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    key = await new_key(app, account)
    assert (await app.generate(key["key"], n=4)).status == 200
    await app.flush()
    assert (await app.generate(key["key"], n=1)).status == 200  # this one only in Redis
    assert await usage_rows(db, uuid.UUID(key["id"])) == {today(): 4}
    body = await usage(app, account, start=today().isoformat(), end=today().isoformat())
    assert rows(body) == {(today().isoformat(), key["id"], 5)}
    await app.flush()
    assert await usage_rows(db, uuid.UUID(key["id"])) == {today(): 5}


async def test_earlier_days_within_and_outside_the_range(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    key = await new_key(app, account)
    await store_usage(db, key["id"], days_ago(20), 11)
    await store_usage(db, key["id"], days_ago(5), 7)
    d20, d5 = days_ago(20).isoformat(), days_ago(5).isoformat()

    body = await usage(app, account, start=days_ago(25).isoformat(), end=days_ago(1).isoformat())
    assert rows(body) == {(d20, key["id"], 11), (d5, key["id"], 7)}
    assert body["total"] == 18
    body = await usage(app, account, start=d20, end=d20)  # both ends are inclusive
    assert rows(body) == {(d20, key["id"], 11)}
    body = await usage(app, account, start=d5, end=today().isoformat())
    assert rows(body) == {(d5, key["id"], 7)}
    body = await usage(app, account, start=days_ago(4).isoformat(), end=today().isoformat())
    assert body["data"] == []
    assert body["total"] == 0
    body = await usage(app, account, start=days_ago(30).isoformat(), end=days_ago(21).isoformat())
    assert body["data"] == []
    assert body["total"] == 0


async def test_default_range_is_the_last_30_days(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    key = await new_key(app, account)
    await store_usage(db, key["id"], days_ago(10), 3)
    await store_usage(db, key["id"], days_ago(40), 9)
    body = await usage(app, account)
    assert rows(body) == {(days_ago(10).isoformat(), key["id"], 3)}
    assert body["total"] == 3


async def test_only_the_callers_keys(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    mine = await new_key(app, account)
    other = await new_account(app)
    theirs = await new_key(app, other)
    assert (await app.generate(mine["key"], n=1)).status == 200
    assert (await app.generate(theirs["key"], n=4)).status == 200
    await store_usage(db, theirs["id"], days_ago(3), 8)
    body = await usage(app, account)
    assert rows(body) == {(today().isoformat(), mine["id"], 1)}
    assert body["total"] == 1
    assert theirs["id"] not in await (await get_usage(app, account)).text()


async def test_filter_by_key(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    first = await new_key(app, account, name="first")
    second = await new_key(app, account, name="second")
    assert (await app.generate(first["key"], n=2)).status == 200
    assert (await app.generate(second["key"], n=3)).status == 200
    await store_usage(db, first["id"], days_ago(2), 6)
    await store_usage(db, second["id"], days_ago(2), 1)
    d0, d2 = today().isoformat(), days_ago(2).isoformat()

    both = await usage(app, account)
    assert rows(both) == {
        (d0, first["id"], 2),
        (d0, second["id"], 3),
        (d2, first["id"], 6),
        (d2, second["id"], 1),
    }
    assert both["total"] == 12
    only = await usage(app, account, key_id=first["id"])
    assert rows(only) == {(d0, first["id"], 2), (d2, first["id"], 6)}
    assert only["total"] == 8
    ranged = await usage(app, account, key_id=second["id"], start=d2, end=d2)
    assert rows(ranged) == {(d2, second["id"], 1)}


async def test_revoked_keys_still_count(app: Gateway):
    account = await new_account(app)
    key = await new_key(app, account)
    assert (await app.generate(key["key"], n=2)).status == 200
    response = await app.client.delete(f"/v1/keys/{key['id']}", headers=account.headers)
    assert response.status == 204
    body = await usage(app, account)
    assert rows(body) == {(today().isoformat(), key["id"], 2)}


async def test_someone_elses_key_id_is_not_found(app: Gateway):
    account = await new_account(app)
    await new_key(app, account)
    other = await new_account(app)
    theirs = await new_key(app, other)
    assert (await app.generate(theirs["key"], n=2)).status == 200
    await expect_error(await get_usage(app, account, key_id=theirs["id"]), 404, "not_found")


@pytest.mark.parametrize(
    "params",
    [
        {"start": "yesterday"},
        {"start": "2024-13-01", "end": "2024-12-31"},
        {"start": "2024-02-01", "end": "2024-02-30"},
        {"end": "31/12/2024", "start": "2024-12-01"},
        {"start": "2024-06-10", "end": "2024-06-09"},  # end before start
        {"start": "2023-01-01", "end": "2024-06-30"},  # over 366 days
        {"start": "2000-01-01", "end": "2024-01-01"},
    ],
)
async def test_bad_ranges(app: Gateway, params: dict[str, str]):
    account = await new_account(app)
    await expect_error(await get_usage(app, account, **params), 400, "invalid_request", ANY)


async def test_a_year_is_allowed(app: Gateway, db: asyncpg.Connection):
    account = await new_account(app)
    key = await new_key(app, account)
    await store_usage(db, key["id"], days_ago(300), 4)
    body = await usage(app, account, start=days_ago(330).isoformat(), end=today().isoformat())
    assert rows(body) == {(days_ago(300).isoformat(), key["id"], 4)}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic eDp5"}]
)
async def test_usage_needs_an_account_token(app: Gateway, headers: dict[str, str]):
    await expect_error(await app.client.get("/v1/usage", headers=headers), 401, "invalid_token")


async def test_an_api_key_is_not_an_account_token(app: Gateway):
    account = await new_account(app)
    key = await new_key(app, account)
    response = await app.client.get("/v1/usage", headers={"Authorization": f"Bearer {key['key']}"})
    await expect_error(response, 401, "invalid_token")


async def test_credits_per_key_and_day_and_grouped_by_day_key_or_model(
    make_app: MakeGateway, db: asyncpg.Connection
):
    gateway = await make_app({**CREDITS, "default_plan": "metered"})
    account = await new_account(gateway)
    first, second = await new_key(gateway, account), await new_key(gateway, account)
    assert (await gateway.generate(first["key"], n=2, size="512x512")).status == 200
    assert (await gateway.generate(second["key"], n=1)).status == 200
    await store_usage(db, first["id"], days_ago(1), 4)
    await gateway.flush()
    body = await usage(gateway, account)
    assert rows(body) == {
        (days_ago(1).isoformat(), first["id"], 4),
        (today().isoformat(), first["id"], 2),
        (today().isoformat(), second["id"], 1),
    }
    assert {(r["api_key_id"], r["date"]): r["credits"] for r in body["data"]} == {
        (first["id"], days_ago(1).isoformat()): 0,
        (first["id"], today().isoformat()): 6,
        (second["id"], today().isoformat()): 1,
    }
    assert body["credits"] == 7
    by_day = await usage(gateway, account, group_by="day")
    assert [(r["date"], r["api_key_id"], r["images"], r["credits"]) for r in by_day["data"]] == [
        (days_ago(1).isoformat(), None, 4, 0),
        (today().isoformat(), None, 3, 7),
    ]
    by_key = await usage(gateway, account, group_by="key")
    assert {(r["api_key_id"], r["date"], r["images"], r["credits"]) for r in by_key["data"]} == {
        (first["id"], None, 6, 6),
        (second["id"], None, 1, 1),
    }
    by_model = await usage(gateway, account, group_by="model")
    assert [(r["model"], r["date"], r["api_key_id"], r["images"], r["credits"])
            for r in by_model["data"]] == [("local", None, None, 7, 7)]  # fmt: skip
    bad = await get_usage(gateway, account, group_by="user")
    await expect_error(bad, 400, "invalid_request", "group_by")
