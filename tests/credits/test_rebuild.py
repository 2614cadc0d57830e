"""After Redis loses everything, balances are rebuilt from the ledger in Postgres."""

from __future__ import annotations

from typing import Any

import redis

from tests.support.config import merge
from tests.support.credits import CREDITS, grant, ledger_rows, remaining
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import bearer
from tests.support.redis import PrivateRedis


async def test_a_flushall_rebuilds_the_balances_from_the_ledger(
    private_redis: PrivateRedis, make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway(merge(CREDITS, {"redis": {"url": private_redis.url}}))
    key = await make_key("metered")
    assert (await grant(gateway, key.user_id, 30)).status == 200
    spent = await gateway.generate(key.key, n=3, size="512x512")
    assert remaining(spent) == 31  # 1 of the allowance left, 30 purchased
    await gateway.flush()

    with redis.Redis(port=private_redis.port) as client:
        client.flushall()

    after = await gateway.generate(key.key, n=1, size="512x512")
    assert after.status == 200
    assert remaining(after) == 28  # the allowance's last credit, then 2 purchased
    credits = await (await gateway.client.get("/v1/credits", headers=bearer(key.key))).json()
    assert (credits["monthly"]["balance"], credits["purchased"]["balance"]) == (0, 28)
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [
        ("grant", 30),
        ("monthly_reset", 10),
        ("charge", -9),
        ("charge", -3),  # no second reset: the month's allowance came from the ledger
    ]
