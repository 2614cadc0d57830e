"""A client that leaves a stream, against a real gateway process: the upstream call
stops, and only the images completed before it left are charged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.config import merge
from tests.support.gateway import MakeKey
from tests.support.http import bearer
from tests.support.processes import running_gateway
from tests.support.upstreams import FakeUpstream, serve_fake_upstream, upstream_config
from tests.support.usage import today, usage_rows
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def cancelling_upstream() -> AsyncIterator[FakeUpstream]:
    async with serve_fake_upstream(handler_cancellation=True) as upstream:
        yield upstream


async def test_a_client_leaving_mid_stream_stops_the_upstream_and_pays_for_what_it_got(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    cancelling_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    config = merge(
        raw_config,
        {
            "redis": {"key_prefix": f"{raw_config['redis']['key_prefix']}{uuid.uuid4().hex[:8]}:"},
            "usage": {"flush_interval_seconds": 0.2},
        },
    )
    config = merge(config, upstream_config(cancelling_upstream, timeout=60))
    cancelling_upstream.mode = "stream_hang"  # image 1 comes, image 2 never does
    key = await make_key(images_per_day=10)
    async with (
        running_gateway(tmp_path, config) as (url, _),
        aiohttp.ClientSession() as session,
    ):
        response = await session.post(
            f"{url}/v1/images/generations",
            json={"prompt": "p", "size": "256x256", "model": "remote", "n": 3, "stream": True},
            headers=bearer(key.key),
        )
        assert response.status == 200
        seen = b""
        while b"image_generation.completed" not in seen:
            chunk = await response.content.readany()
            assert chunk, "the stream ended before an image completed"
            seen += chunk
        response.close()  # the client leaves, the upstream still working on image 2

        await cancelling_upstream.stream_closed.wait()

        async def charged_one() -> object:
            rows = await usage_rows(db, key.key_id)
            return rows == {today(): 1} or rows

        await eventually(charged_one, timeout=30)
        # Redis's counter agrees: 10 - 1 charged - 1 for this request.
        async with session.post(
            f"{url}/v1/images/generations",
            json={"prompt": "p", "size": "256x256"},
            headers=bearer(key.key),
        ) as after:
            assert after.status == 200
            assert after.headers["x-ratelimit-remaining-images"] == "8"
