"""Operators grant credits (audited, once per Idempotency-Key); customers read theirs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.support.accounts import new_account, new_key
from tests.support.config import ADMIN_TOKEN
from tests.support.credits import CREDITS, grant, ledger_rows, remaining
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import bearer, expect_error


async def test_purchased_credits_are_spent_after_the_allowance_and_survive_the_month(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    now = [dt.datetime(2026, 3, 31, 23, 0, tzinfo=dt.UTC).timestamp()]
    gateway = await make_gateway(CREDITS, limiter_clock=lambda: now[0])
    key = await make_key("metered")
    granted = await grant(gateway, key.user_id, 5, reason="invoice 7")
    assert granted.status == 200, await granted.text()
    assert (await granted.json())["purchased"] == {"balance": 5}
    spent = await gateway.generate(key.key, n=4, size="512x512")  # 12: 10 allowance + 2
    assert remaining(spent) == 3
    now[0] += 3600  # April: a new allowance; the purchased credits stay
    april = await gateway.generate(key.key, n=1, size="256x256")
    assert remaining(april) == 12
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [
        ("grant", 5),
        ("monthly_reset", 10),
        ("charge", -12),
        ("monthly_reset", 10),
        ("charge", -1),
    ]


async def test_a_grant_is_applied_once_per_idempotency_key_and_audited(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway(CREDITS)
    key = await make_key("metered")
    first = await grant(gateway, key.user_id, 500, key="invoice-42", reason="invoice 42")
    assert first.status == 200
    assert "Idempotent-Replayed" not in first.headers
    again = await grant(gateway, key.user_id, 500, key="invoice-42", reason="invoice 42")
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    body = await again.json()
    assert body["purchased"] == {"balance": 500}
    assert body["monthly"]["allowance"] == 10
    assert body["total"] == 510
    other = await grant(gateway, key.user_id, 7, key="invoice-42", reason="invoice 42")
    await expect_error(other, 422, "idempotency_key_reused", "Idempotency-Key")
    taken = await grant(gateway, key.user_id, -200, reason="refunded by card")
    assert (await taken.json())["purchased"] == {"balance": 300}
    too_much = await grant(gateway, key.user_id, -301, reason="oops")
    error = await expect_error(too_much, 400, "invalid_request", "amount")
    assert error["message"] == (
        "The user has 300 purchased credits: an adjustment cannot take away 301."
    )
    audit = await db.fetch(
        "SELECT actor, details->>'amount' AS amount, details->>'reason' AS reason"
        " FROM admin_audit_log WHERE target_id = $1 AND action = 'change_credits'"
        " ORDER BY created_at",
        key.user_id,
    )
    assert [tuple(row) for row in audit] == [
        ("admin-token", "500", "invoice 42"),
        ("admin-token", "-200", "refunded by card"),
    ]
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [("grant", 500), ("adjust", -200)]


async def test_a_grant_needs_an_idempotency_key_a_known_user_and_a_sane_body(
    make_gateway: MakeGateway, make_key: MakeKey
):
    gateway = await make_gateway(CREDITS)
    key = await make_key("metered")
    url = f"/admin/users/{key.user_id}/credits"
    admin = bearer(ADMIN_TOKEN)
    missing = await gateway.client.post(url, json={"amount": 1, "reason": "r"}, headers=admin)
    await expect_error(missing, 400, "invalid_request", "Idempotency-Key")
    await expect_error(await grant(gateway, key.user_id, 0), 400, "invalid_request", "amount")
    await expect_error(
        await grant(gateway, key.user_id, 5, reason=""), 400, "invalid_request", "reason"
    )
    unknown = await grant(gateway, "0b7e6f1c-3d2a-4e59-8c1b-2f4a6d8e9c01", 5)
    await expect_error(unknown, 404, "not_found")
    anonymous = await gateway.client.post(url, json={"amount": 1, "reason": "r"})
    await expect_error(anonymous, 401, "invalid_token")


async def test_customers_read_their_credits_and_ledger_with_a_key_or_a_token(
    make_gateway: MakeGateway, db: Any
):
    gateway = await make_gateway(
        {**CREDITS, "default_plan": "metered", "auth": {"register_per_minute_per_ip": 1000}}
    )
    account = await new_account(gateway)
    api_key = (await new_key(gateway, account))["key"]
    fresh = await gateway.client.get("/v1/credits", headers=account.headers)
    assert fresh.status == 200, await fresh.text()
    body = await fresh.json()
    today = dt.datetime.now(dt.UTC)
    month_end = dt.datetime(today.year + today.month // 12, today.month % 12 + 1, 1, tzinfo=dt.UTC)
    assert body == {
        "monthly": {
            "balance": 10,
            "allowance": 10,
            "resets_at": month_end.isoformat().replace("+00:00", "Z"),
        },
        "purchased": {"balance": 0},
        "total": 10,
    }
    await grant(gateway, account.id, 20, reason="welcome")
    assert (await gateway.generate(api_key, n=3, size="512x512")).status == 200
    by_key = await gateway.client.get("/v1/credits", headers=bearer(api_key))
    assert (await by_key.json())["total"] == 21
    by_header = await gateway.client.get("/v1/credits", headers={"X-API-Key": api_key})
    assert (await by_header.json())["monthly"]["balance"] == 1
    await gateway.flush()
    page = await gateway.client.get("/v1/credits/ledger?limit=2", headers=account.headers)
    entries = await page.json()
    assert [(e["kind"], e["amount"]) for e in entries["data"]] == [
        ("charge", -9),
        ("monthly_reset", 10),
    ]
    assert entries["has_more"] is True
    charge = entries["data"][0]
    assert (charge["monthly_delta"], charge["purchased_delta"]) == (-9, 0)
    assert charge["reference"]
    assert charge["api_key_id"]
    before = entries["data"][-1]["id"]
    rest = await gateway.client.get(f"/v1/credits/ledger?before={before}", headers=bearer(api_key))
    assert [(e["kind"], e["amount"], e["reason"]) for e in (await rest.json())["data"]] == [
        ("grant", 20, "welcome")
    ]
    bad = await gateway.client.get("/v1/credits/ledger?limit=0", headers=account.headers)
    await expect_error(bad, 400, "invalid_request", "limit")
    await expect_error(await gateway.client.get("/v1/credits"), 401, "invalid_token")
