"""Usage that can be billed: each key's images and credits per day are recorded per model
and per backend that made them, exactly, through fallbacks, failures, jobs and a Redis
that lost its data."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis

from tests.support.accounts import Account, new_account, new_key
from tests.support.config import merge
from tests.support.credits import CREDITS
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import expect_error
from tests.support.jobs import submit, wait_for_job
from tests.support.redis import PrivateRedis
from tests.support.upstreams import FakeUpstream, serve_fake_upstream
from tests.support.usage import model_usage_rows, today, usage_rows

#: Two models on two backends of their own.
TWO_MODELS: dict[str, Any] = {
    "backends": {"local": {"type": "local"}, "second": {"type": "local"}},
    "models": {"local": ["local"], "sketch": ["second"]},
}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with serve_fake_upstream() as fake:
        fake.mode = "fail"
        yield fake


def with_fallback(upstream: FakeUpstream) -> dict[str, Any]:
    """Model "other": the upstream first, the local backend as its fallback; model "only":
    the upstream alone."""
    return {
        "backends": {
            "openai": {
                "type": "openai",
                "base_url": upstream.url,
                "retries": 0,
                "breaker_failures": 100,
            },
            "local": {"type": "local"},
        },
        "models": {"other": ["openai", "local"], "only": ["openai"], "local": ["local"]},
    }


async def usage(gateway: Gateway, account: Account, **params: str) -> dict[str, Any]:
    response = await gateway.client.get("/v1/usage", params=params, headers=account.headers)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def charged(rows: dict[tuple[dt.date, str, str], tuple[int, int]]) -> dict[Any, tuple[int, int]]:
    """The rows that still hold images or credits (a label all given back reads 0, 0)."""
    return {slot: value for slot, value in rows.items() if value != (0, 0)}


async def test_each_model_and_backend_is_counted_apart(
    make_app: MakeGateway, db: asyncpg.Connection
):
    gateway = await make_app(TWO_MODELS)
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    assert (await gateway.generate(key["key"], n=2, model="local")).status == 200
    assert (await gateway.generate(key["key"], n=3, model="sketch")).status == 200
    assert (await gateway.generate(key["key"], n=1, model="sketch")).status == 200

    live = await usage(gateway, account)  # not flushed yet: Redis's live counts
    assert {(r["model"], r["images"]) for r in live["data"]} == {("local", 2), ("sketch", 4)}
    await gateway.flush()
    key_id = uuid.UUID(key["id"])
    assert await model_usage_rows(db, key_id) == {
        (today(), "local", "local"): (2, 0),
        (today(), "sketch", "second"): (4, 0),
    }
    assert await usage_rows(db, key_id) == {today(): 6}  # the day's total, as before

    by_model = await usage(gateway, account, group_by="model")
    assert [(r["model"], r["date"], r["api_key_id"], r["images"]) for r in by_model["data"]] == [
        ("local", None, None, 2),
        ("sketch", None, None, 4),
    ]
    only = await usage(gateway, account, model="sketch")
    assert [(r["model"], r["api_key_id"], r["images"]) for r in only["data"]] == [
        ("sketch", key["id"], 4)
    ]
    assert only["total"] == 4


async def test_credits_are_recorded_per_model_at_the_price_charged(
    make_app: MakeGateway, db: asyncpg.Connection
):
    gateway = await make_app(merge(CREDITS, {**TWO_MODELS, "default_plan": "metered"}))
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    assert (await gateway.generate(key["key"], n=2, size="512x512")).status == 200  # 3 each
    assert (await gateway.generate(key["key"], n=1, model="sketch")).status == 200  # default 1
    await gateway.flush()
    assert await model_usage_rows(db, uuid.UUID(key["id"])) == {
        (today(), "local", "local"): (2, 6),
        (today(), "sketch", "second"): (1, 1),
    }
    by_model = await usage(gateway, account, group_by="model")
    assert [(r["model"], r["images"], r["credits"]) for r in by_model["data"]] == [
        ("local", 2, 6),
        ("sketch", 1, 1),
    ]
    assert by_model["credits"] == 7


async def test_a_fallback_counts_the_images_under_the_backend_that_made_them(
    make_app: MakeGateway, upstream: FakeUpstream, db: asyncpg.Connection
):
    gateway = await make_app(with_fallback(upstream))
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    response = await gateway.generate(key["key"], n=2, model="other")
    assert response.status == 200, await response.text()
    assert response.headers["X-Gateway-Backend"] == "local"
    live = await usage(gateway, account, group_by="model")
    assert [(r["model"], r["images"]) for r in live["data"]] == [("other", 2)]

    upstream.mode = "ok"
    assert (await gateway.generate(key["key"], n=1, model="other")).status == 200
    upstream.mode = "short"  # 2 of 3: the third is given back under the same label
    short = await gateway.generate(key["key"], n=3, model="other")
    assert short.status == 200
    assert len((await short.json())["data"]) == 2
    await gateway.flush()
    assert charged(await model_usage_rows(db, uuid.UUID(key["id"]))) == {
        (today(), "other", "local"): (2, 0),
        (today(), "other", "openai"): (3, 0),
    }


async def test_a_failed_upstream_call_is_counted_under_no_model(
    make_app: MakeGateway, upstream: FakeUpstream, db: asyncpg.Connection
):
    gateway = await make_app(with_fallback(upstream))
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    response = await gateway.generate(key["key"], n=3, model="only")
    await expect_error(response, 502, "upstream_error")
    await gateway.flush()
    key_id = uuid.UUID(key["id"])
    assert charged(await model_usage_rows(db, key_id)) == {}
    assert await usage_rows(db, key_id) == {today(): 0}
    assert (await usage(gateway, account))["data"] == []


async def test_a_job_is_counted_under_the_backend_that_made_its_images(
    make_app: MakeGateway, upstream: FakeUpstream, db: asyncpg.Connection
):
    gateway = await make_app(with_fallback(upstream))
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    made = await submit(gateway.client, key["key"], model="other", n=2)
    assert made.status == 202, await made.text()
    job = await wait_for_job(gateway.client, key["key"], (await made.json())["id"])
    assert job["status"] == "succeeded", job
    failed = await submit(gateway.client, key["key"], model="only", n=3)
    assert failed.status == 202, await failed.text()
    job = await wait_for_job(gateway.client, key["key"], (await failed.json())["id"])
    assert job["status"] == "failed", job
    await gateway.flush()
    assert charged(await model_usage_rows(db, uuid.UUID(key["id"]))) == {
        (today(), "other", "local"): (2, 0),
    }


async def test_usage_by_model_is_rebuilt_after_redis_loses_it(
    private_redis: PrivateRedis, make_app: MakeGateway, db: asyncpg.Connection
):
    gateway = await make_app(merge(TWO_MODELS, {"redis": {"url": private_redis.url}}))
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    assert (await gateway.generate(key["key"], n=2, model="local")).status == 200
    assert (await gateway.generate(key["key"], n=3, model="sketch")).status == 200
    await gateway.flush()

    with redis.Redis(port=private_redis.port) as client:
        client.flushall()

    assert (await gateway.generate(key["key"], n=1, model="sketch")).status == 200
    live = await usage(gateway, account, group_by="model")
    assert [(r["model"], r["images"]) for r in live["data"]] == [("local", 2), ("sketch", 4)]
    await gateway.flush()
    key_id = uuid.UUID(key["id"])
    assert await model_usage_rows(db, key_id) == {
        (today(), "local", "local"): (2, 0),
        (today(), "sketch", "second"): (4, 0),
    }
    assert await usage_rows(db, key_id) == {today(): 6}
