"""Credits across real gateway processes: exact under concurrency, and after a SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.config import merge
from tests.support.credits import CREDITS, PRICES, grant, ledger_rows
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.processes import running_gateway
from tests.support.upstreams import upstream_config

pytestmark = pytest.mark.slow


async def _generate(
    session: aiohttp.ClientSession, url: str, key: str, **body: Any
) -> tuple[int, int, int | None]:
    """(status, images delivered, x-credits-remaining); status 0: the connection died."""
    body = {"prompt": "p", **body}
    try:
        async with session.post(
            f"{url}/v1/images/generations", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response:
            data = await response.json()
            left = response.headers.get("x-credits-remaining")
            images = len(data["data"]) if response.status == 200 else 0
            return response.status, images, int(left) if left is not None else None
    except (TimeoutError, aiohttp.ClientError):
        return 0, 0, None


async def _total(gateway: Any, key: str) -> int:
    response = await gateway.client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"})
    total: int = (await response.json())["total"]
    return total


async def test_300_requests_over_two_processes_spend_a_balance_exactly(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_gateway: MakeGateway,
    make_key: MakeKey,
    db: Any,
):
    allowance, purchased = 200, 150
    extra = merge(CREDITS, {"plans": {"metered": {"monthly_credits": allowance}}})
    observer = await make_gateway(extra)
    key = await make_key("metered")
    assert (await grant(observer, key.user_id, purchased)).status == 200
    asked = list(zip(itertools.cycle(PRICES), itertools.cycle((1, 2, 3, 4)), range(300)))
    async with AsyncExitStack() as stack:
        urls = [
            (await stack.enter_async_context(running_gateway(tmp_path, raw_config, extra)))[0]
            for _ in range(2)
        ]
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=150))
        )
        targets = itertools.cycle(urls)
        results = await asyncio.gather(
            *(_generate(session, next(targets), key.key, size=s, n=n) for s, n, _ in asked)
        )
    spent = 0
    for (size, n, _), (status, images, left) in zip(asked, results, strict=True):
        assert status in (200, 402)
        assert left is not None
        assert left >= 0
        if status == 200:
            assert images == n
            spent += n * PRICES[size]
    budget = allowance + purchased
    assert 0 < spent <= budget
    assert await _total(observer, key.key) == budget - spent
    # Each refusal saw at least what is left at the end (nothing failed, so the balance
    # only went down): it asked for more than that.
    refused = [
        n * PRICES[size] for (size, n, _), r in zip(asked, results, strict=True) if r[0] == 402
    ]
    assert refused
    assert min(refused) > budget - spent
    await observer.flush()
    rows = await ledger_rows(db, key.user_id)
    assert sum(amount for kind, amount in rows if kind in ("charge", "refund")) == -spent
    assert [kind for kind, _ in rows].count("monthly_reset") == 1


async def test_sigkill_with_requests_in_flight_gives_their_credits_back_once(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_gateway: MakeGateway,
    make_key: MakeKey,
    db: Any,
    fake_upstream: Any,
):
    fake_upstream.mode = "hang"
    extra = merge(
        merge(CREDITS, upstream_config(fake_upstream, max_concurrency=0)),
        {
            "plans": {"metered": {"monthly_credits": 100}},
            "pricing": {"models": {"remote": {"credits_per_image": 2}}},
        },
    )
    key = await make_key("metered")
    async with (
        running_gateway(tmp_path, raw_config, extra) as (url, process),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session,
    ):
        delivered = await asyncio.gather(
            *(_generate(session, url, key.key, size="256x256", n=2) for _ in range(10))
        )
        assert [status for status, _, _ in delivered] == [200] * 10  # 20 credits
        # Admitted, reserved (30 * 2 images * 2 credits = 120 > 80 left: some are 402)...
        held = [
            asyncio.create_task(_generate(session, url, key.key, model="remote", n=2))
            for _ in range(30)
        ]
        while len(fake_upstream.requests) < 20:
            await asyncio.sleep(0.01)
        # ...and still waiting on the upstream when the process dies.
        process.send_signal(signal.SIGKILL)
        outcomes = await asyncio.gather(*held)
    assert sorted(status for status, _, _ in outcomes) == [0] * 20 + [402] * 10
    survivor = await make_gateway(extra)
    await survivor.flush()  # settles the dead process's journal, then writes the ledger
    assert await _total(survivor, key.key) == 80
    await survivor.flush()  # again: nothing is given back twice
    assert await _total(survivor, key.key) == 80
    rows = await ledger_rows(db, key.user_id)
    assert sum(amount for kind, amount in rows if kind != "monthly_reset") == -20
    assert [kind for kind, _ in rows].count("refund") == 20
