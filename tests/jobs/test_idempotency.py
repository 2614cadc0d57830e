"""Idempotency-Key on generations and job submissions: one run, one charge, the same
answer again."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import asyncpg

from gateway.redis.layout import idempotency_entry
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.jobs import JOBS
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.usage import today, usage_rows

GENERATE = "/v1/images/generations"


async def _post(gateway: Gateway, key: str, idem: str, path: str = GENERATE, **body: Any) -> Any:
    body.setdefault("prompt", "a lighthouse at dawn")
    body.setdefault("size", "256x256")
    return await gateway.client.post(
        path, json=body, headers={**bearer(key), "Idempotency-Key": idem}
    )


async def test_a_retry_gets_the_first_answer_without_a_second_call_or_charge(
    make_app: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    gateway = await make_app(upstream_config(fake_upstream))
    key = await make_key()
    first = await _post(gateway, key.key, "order-1", model="remote", n=2)
    assert first.status == 200
    assert "Idempotent-Replayed" not in first.headers
    again = await _post(gateway, key.key, "order-1", model="remote", n=2)
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["X-Gateway-Backend"] == "remote"
    assert again.content_type == "application/json"
    assert await again.read() == await first.read()
    assert len(fake_upstream.requests) == 1
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}

    # The same key with another request is refused; another key runs.
    other = await _post(gateway, key.key, "order-1", model="remote", n=1)
    await expect_error(other, 422, "idempotency_key_reused", "Idempotency-Key")
    assert (await _post(gateway, key.key, "order-2", model="remote")).status == 200
    assert len(fake_upstream.requests) == 2


async def test_keys_belong_to_their_user(app: Gateway, make_key: MakeKey):
    one, two = await make_key(), await make_key()
    assert (await _post(app, one.key, "shared")).status == 200
    response = await _post(app, two.key, "shared", prompt="something else")
    assert response.status == 200
    assert "Idempotent-Replayed" not in response.headers


async def test_a_repeat_while_the_first_runs_is_409(
    make_app: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.mode = "hang"
    gateway = await make_app(upstream_config(fake_upstream))
    key = await make_key()
    first = asyncio.create_task(_post(gateway, key.key, "slow", model="remote"))
    while not fake_upstream.requests:
        await asyncio.sleep(0.02)
    response = await _post(gateway, key.key, "slow", model="remote")
    await expect_error(response, 409, "idempotency_key_in_use", "Idempotency-Key")
    assert response.headers["Retry-After"] == "1"
    fake_upstream.release.set()
    assert (await first).status == 200
    replay = await _post(gateway, key.key, "slow", model="remote")
    assert replay.status == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(fake_upstream.requests) == 1


async def test_5xx_and_429_are_not_kept(
    make_app: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    fake_upstream.mode = "fail"
    gateway = await make_app(upstream_config(fake_upstream, retries=0))
    key = await make_key(images_per_day=1)
    await expect_error(await _post(gateway, key.key, "k", model="remote"), 502, "upstream_error")
    fake_upstream.mode = "ok"
    response = await _post(gateway, key.key, "k", model="remote")
    assert response.status == 200
    assert "Idempotent-Replayed" not in response.headers

    refused = await _post(gateway, key.key, "q", model="remote")
    await expect_error(refused, 429, "daily_quota_exceeded", None)
    # Neither answer was kept: the keys are free again.
    prefix = gateway.services.config.redis.key_prefix
    for idem in ("q",):
        entry = idempotency_entry(
            prefix, str(key.user_id), hashlib.sha256(idem.encode()).hexdigest()
        )
        assert not await gateway.services.redis.exists(entry)
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 1}


async def test_4xx_answers_are_kept(app: Gateway, make_key: MakeKey):
    key = await make_key()
    first = await _post(app, key.key, "bad", n=99)
    await expect_error(first, 400, "invalid_request", "n")
    again = await _post(app, key.key, "bad", n=99)
    await expect_error(again, 400, "invalid_request", "n")
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_a_bad_key_is_400(app: Gateway, make_key: MakeKey):
    key = await make_key()
    for bad in ("x" * 256, "has space", "é"):
        response = await app.client.post(
            GENERATE,
            json={"prompt": "x", "size": "256x256"},
            headers={**bearer(key.key), "Idempotency-Key": bad},
        )
        await expect_error(response, 400, "invalid_request", "Idempotency-Key")


async def test_a_retried_job_submission_is_the_same_job(
    app: Gateway, make_key: MakeKey, db: asyncpg.Connection
):
    key = await make_key()
    first = await _post(app, key.key, "job-1", JOBS)
    assert first.status == 202
    job = await first.json()
    again = await _post(app, key.key, "job-1", JOBS)
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"{JOBS}/{job['id']}"
    assert (await again.json())["id"] == job["id"]
    count = await db.fetchval("SELECT count(*) FROM image_jobs WHERE user_id = $1", key.user_id)
    assert count == 1
