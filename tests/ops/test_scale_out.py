"""Three real gateway processes sharing one Postgres and one Redis."""

from __future__ import annotations

import asyncio
import itertools
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.config import ADMIN_TOKEN
from tests.support.gateway import MakeKey
from tests.support.processes import post, running_gateway
from tests.support.usage import today, usage_rows
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


async def test_three_processes_keep_exact_limits_see_revocations_and_lose_nothing(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey, db: Any
):
    extra = {"usage": {"flush_interval_seconds": 0.3}}
    limited = await make_key("pro", requests_per_minute=50, images_per_day=100_000)
    quota = await make_key("pro", requests_per_minute=100_000, images_per_day=120)
    async with AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(running_gateway(tmp_path, raw_config, extra))
            for _ in range(3)
        ]
        urls = [url for url, _ in gateways]
        connector = aiohttp.TCPConnector(limit=150)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))

        # 1,000 concurrent requests over three processes against a limit of 50 per minute.
        targets = itertools.cycle(urls)
        statuses = await asyncio.gather(
            *(post(session, next(targets), limited.key) for _ in range(1000))
        )
        assert statuses.count(200) == 50
        assert statuses.count(429) == 950

        # A daily quota of 120 images, asked for 2 at a time by 300 concurrent requests.
        statuses = await asyncio.gather(
            *(post(session, next(targets), quota.key, n=2) for _ in range(300))
        )
        assert statuses.count(200) == 60
        assert statuses.count(429) == 240

        # Kill one process outright: what it admitted is flushed by the survivors.
        _, victim = gateways[0]
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 10)

        async def flushed() -> bool:
            return await usage_rows(db, limited.key_id) == {today(): 50} and await usage_rows(
                db, quota.key_id
            ) == {today(): 120}

        await eventually(flushed)

        # A revocation through one survivor is seen by the other within a second.
        warm = await make_key("pro")
        for url in urls[1:]:
            assert await post(session, url, warm.key) == 200
        async with session.patch(
            f"{urls[1]}/admin/keys/{warm.key_id}",
            json={"is_active": False},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            assert response.status == 200

        async def refused() -> bool:
            return await post(session, urls[2], warm.key) == 401

        assert await eventually(refused) < 1.0
