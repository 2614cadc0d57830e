"""Credits at admission: charged by price, refused with 402, given back when not delivered."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

from tests.support.config import merge
from tests.support.credits import CREDITS, PRICES, ledger_rows, remaining
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import ANY, expect_error
from tests.support.metrics import metric_total
from tests.support.upstreams import upstream_config


async def test_images_are_charged_their_price_and_a_request_that_does_not_fit_is_402(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway(CREDITS)
    key = await make_key("metered")
    first = await gateway.generate(key.key, n=2, size="512x512")
    assert first.status == 200
    assert remaining(first) == 4
    refused = await gateway.generate(key.key, n=2, size="512x512")
    error = await expect_error(refused, 402, "insufficient_credits", "n")
    assert error["message"] == (
        "Not enough credits: 2 images at 3 credits each cost 6; the balance is 4 credits"
        " (4 left of this month's allowance, 0 purchased)."
    )
    assert remaining(refused) == 4
    last = await gateway.generate(key.key, n=4, size="256x256")
    assert last.status == 200
    assert remaining(last) == 0
    await expect_error(await gateway.generate(key.key), 402, "insufficient_credits", None)
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [
        ("monthly_reset", 10),
        ("charge", -6),
        ("charge", -4),
    ]
    metrics = await (await gateway.client.get("/metrics")).text()
    labels = {"model": "local", "plan": "metered"}
    assert metric_total(metrics, "gateway_images_delivered_total", **labels) == 6
    assert metric_total(metrics, "gateway_credits_charged_total", **labels) == 10


async def test_a_plan_without_monthly_credits_has_no_credit_limit(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway(CREDITS)
    key = await make_key("pro")
    for _ in range(3):
        response = await gateway.generate(key.key, n=4, size="512x512")
        assert response.status == 200
        assert "x-credits-remaining" not in response.headers
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == []
    credits = await gateway.client.get("/v1/credits", headers={"X-API-Key": key.key})
    body = await credits.json()
    assert (body["monthly"]["allowance"], body["monthly"]["balance"], body["total"]) == (
        None,
        0,
        0,
    )


async def test_images_not_delivered_are_given_back(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any, fake_upstream: Any
):
    extra = merge(
        merge(CREDITS, upstream_config(fake_upstream, retries=0)),
        {"pricing": {"models": {"remote": {"credits_per_image": 2}}}},
    )
    gateway = await make_gateway(extra)
    key = await make_key("metered")
    fake_upstream.mode = "short"  # one image fewer than asked
    short = await gateway.generate(key.key, model="remote", n=3)
    assert short.status == 200
    assert len((await short.json())["data"]) == 2
    assert remaining(short) == 6  # 10 - 2 images * 2
    fake_upstream.mode = "fail"
    await expect_error(await gateway.generate(key.key, model="remote", n=2), 502, "upstream_error")
    fake_upstream.mode = "ok"
    after = await gateway.generate(key.key, model="remote", n=1)
    assert remaining(after) == 4  # the failed request cost nothing
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [
        ("monthly_reset", 10),
        ("charge", -6),
        ("refund", 2),
        ("charge", -4),
        ("refund", 4),
        ("charge", -2),
    ]


async def test_two_gateways_never_overspend_a_balance_and_charge_exactly_what_they_delivered(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    budget = 50
    extra = merge(CREDITS, {"plans": {"metered": {"monthly_credits": budget}}})
    first, second = await make_gateway(extra), await make_gateway(extra)
    key = await make_key("metered")
    gateways = itertools.cycle([first, second])
    sizes = itertools.cycle(PRICES)
    asked = [(next(gateways), next(sizes), n) for n in (1, 2) * 20]
    responses = await asyncio.gather(
        *(gateway.generate(key.key, size=size, n=n) for gateway, size, n in asked)
    )
    spent = 0
    for (_, size, n), response in zip(asked, responses, strict=True):
        if response.status == 200:
            spent += n * PRICES[size]
            assert remaining(response) >= 0
        else:
            await expect_error(response, 402, "insufficient_credits", ANY)
    assert 0 < spent <= budget
    left = await first.generate(key.key, size="256x256")
    if budget - spent >= 1:
        assert left.status == 200
        assert remaining(left) == budget - spent - 1
        spent += 1
    else:
        await expect_error(left, 402, "insufficient_credits", None)
    await first.flush()
    rows = await ledger_rows(db, key.user_id)
    assert sum(amount for kind, amount in rows if kind != "monthly_reset") == -spent


async def test_the_allowance_resets_once_at_the_start_of_a_utc_month(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    now = [dt.datetime(2026, 1, 31, 23, 59, 58, tzinfo=dt.UTC).timestamp()]
    gateway = await make_gateway(CREDITS, limiter_clock=lambda: now[0])
    key = await make_key("metered")
    january = await gateway.generate(key.key, n=2, size="512x512")
    assert remaining(january) == 4
    now[0] += 3  # 2026-02-01 00:00:01: unused credits do not carry over
    february = await gateway.generate(key.key, n=1, size="512x512")
    assert remaining(february) == 7
    again = await gateway.generate(key.key, n=1, size="256x256")
    assert remaining(again) == 6
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [
        ("monthly_reset", 10),
        ("charge", -6),
        ("monthly_reset", 10),
        ("charge", -3),
        ("charge", -1),
    ]
