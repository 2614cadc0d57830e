"""Jobs reserve credits when submitted and are charged only what they deliver."""

from __future__ import annotations

from typing import Any

from tests.support.config import merge
from tests.support.credits import CREDITS
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.jobs import submit, wait_for_job
from tests.support.upstreams import FakeUpstream, upstream_config


def _config(upstream: FakeUpstream) -> dict[str, Any]:
    return merge(
        merge(CREDITS, upstream_config(upstream, retries=0)),
        {"pricing": {"models": {"remote": {"credits_per_image": 2}}}},
    )


async def _total(gateway: Any, key: str) -> int:
    total: int = (await (await gateway.client.get("/v1/credits", headers=bearer(key))).json())[
        "total"
    ]
    return total


async def test_a_job_is_charged_what_it_delivered_and_a_failed_one_nothing(
    make_app: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db: Any
):
    gateway = await make_app(_config(fake_upstream))
    key = await make_key("metered")
    fake_upstream.mode = "short"
    job = await (await submit(gateway.client, key.key, model="remote", n=3)).json()
    done = await wait_for_job(gateway.client, key.key, job["id"])
    assert done["status"] == "succeeded"
    assert await _total(gateway, key.key) == 6  # 2 images delivered at 2 credits

    fake_upstream.mode = "fail"
    failed = await (await submit(gateway.client, key.key, model="remote", n=3)).json()
    assert (await wait_for_job(gateway.client, key.key, failed["id"]))["status"] == "failed"
    assert await _total(gateway, key.key) == 6

    refused = await submit(gateway.client, key.key, model="remote", n=4)
    await expect_error(refused, 402, "insufficient_credits", "n")
    await gateway.flush()
    rows = await db.fetch(
        "SELECT kind, amount, reference FROM credit_ledger WHERE user_id = $1 ORDER BY id",
        key.user_id,
    )
    assert [(r["kind"], r["amount"], r["reference"]) for r in rows] == [
        ("monthly_reset", 10, None),
        ("charge", -6, job["id"]),
        ("refund", 2, job["id"]),
        ("charge", -6, failed["id"]),
        ("refund", 6, failed["id"]),
    ]
