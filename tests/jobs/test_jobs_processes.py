"""Jobs across real gateway processes sharing one Postgres and one Redis: a process
killed mid-job, a quota met by 200 jobs over two processes, a lost queue rebuilt."""

from __future__ import annotations

import asyncio
import itertools
import signal
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.config import merge
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.jobs import JOBS, submit, wait_for_job
from tests.support.processes import running_gateway
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.usage import today, usage_rows
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def _own_namespace(raw_config: dict[str, Any], **jobs: Any) -> dict[str, Any]:
    """The run's config in a Redis namespace (and so a job queue) of the test's own."""
    prefix = f"{raw_config['redis']['key_prefix']}{uuid.uuid4().hex[:8]}:"
    return merge(
        raw_config,
        {
            "redis": {"key_prefix": prefix},
            "usage": {"flush_interval_seconds": 0.2},
            "jobs": {"sweep_interval_seconds": 0.3, **jobs},
        },
    )


async def _job_row(db: asyncpg.Connection, job_id: str) -> Any:
    return await db.fetchrow(
        "SELECT status, attempts, delivered, settled_at FROM image_jobs WHERE id = $1", job_id
    )


async def test_a_job_whose_process_is_killed_is_finished_by_another_and_charged_once(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    config = merge(
        _own_namespace(raw_config, visibility_timeout_seconds=1.5),
        upstream_config(fake_upstream, timeout=60),
    )
    key = await make_key("pro")
    fake_upstream.mode = "hang"  # the first run never answers
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        url, first = await stack.enter_async_context(running_gateway(tmp_path, config))
        response = await submit(session, key.key, url, model="remote", n=2)
        assert response.status == 202
        job_id = (await response.json())["id"]

        async def first_run_started() -> bool:
            return len(fake_upstream.requests) == 1

        await eventually(first_run_started, timeout=10)
        assert (await _job_row(db, job_id))["status"] == "running"

        # A job worker joins, and the process running the job dies.
        worker_url, _ = await stack.enter_async_context(
            running_gateway(tmp_path, config, command="worker")
        )
        fake_upstream.mode = "ok"
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)

        async def finished() -> object:
            row = await _job_row(db, job_id)
            return True if row["settled_at"] is not None else dict(row)

        await eventually(finished, timeout=20)
        row = await _job_row(db, job_id)
        assert row["status"] == "succeeded"
        assert row["attempts"] == 2
        assert row["delivered"] == 2
        assert len(fake_upstream.requests) == 2

        async def charged_once() -> object:
            rows = await usage_rows(db, key.key_id)
            return True if rows == {today(): 2} else rows

        await eventually(charged_once, timeout=10)
        await asyncio.sleep(1.0)  # and it stays so: nothing settles it a second time
        assert await usage_rows(db, key.key_id) == {today(): 2}

        # The worker serves health and metrics, and no public API.
        async with session.get(f"{worker_url}/metrics") as metrics:
            assert metrics.status == 200
            assert 'gateway_jobs_total{status="succeeded"}' in await metrics.text()
        async with session.get(f"{worker_url}{JOBS}/{job_id}") as response:
            assert response.status == 404


async def test_a_job_running_at_sigterm_is_handed_back_and_finished_by_another_at_once(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    # A visibility timeout no test waits out: only the hand-back can finish the job in time.
    config = merge(
        _own_namespace(raw_config, visibility_timeout_seconds=600, shutdown_grace_seconds=0.5),
        upstream_config(fake_upstream, timeout=60),
    )
    key = await make_key("pro")
    fake_upstream.mode = "hang"  # the first run does not finish within the grace
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        url, first = await stack.enter_async_context(running_gateway(tmp_path, config))
        response = await submit(session, key.key, url, model="remote", n=2)
        job_id = (await response.json())["id"]

        async def first_run_started() -> bool:
            return len(fake_upstream.requests) == 1

        await eventually(first_run_started, timeout=10)
        worker_url, _ = await stack.enter_async_context(
            running_gateway(tmp_path, config, command="worker")
        )
        fake_upstream.mode = "ok"
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 20) == 0

        async def finished() -> object:
            row = await _job_row(db, job_id)
            return True if row["settled_at"] is not None else dict(row)

        await eventually(finished, timeout=20)  # the visibility timeout is 600 s
        row = await _job_row(db, job_id)
        assert row["status"] == "succeeded"
        assert row["attempts"] == 2  # the interrupted run counts
        assert row["delivered"] == 2
        assert len(fake_upstream.requests) == 2

        async def charged_once() -> object:
            rows = await usage_rows(db, key.key_id)
            return True if rows == {today(): 2} else rows

        await eventually(charged_once, timeout=10)
        async with session.get(f"{worker_url}/metrics") as metrics:
            assert 'gateway_jobs_total{status="succeeded"}' in await metrics.text()
        log_text = (tmp_path / f"gateway-{url.rsplit(':', 1)[1]}.log").read_text()
        assert f"job {job_id} handed back to the queue" in log_text


async def test_a_job_finishing_within_the_shutdown_grace_is_finished_by_its_process(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    config = merge(
        _own_namespace(raw_config, shutdown_grace_seconds=30),
        upstream_config(fake_upstream, timeout=60),
    )
    key = await make_key("pro")
    fake_upstream.mode = "hang"
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        url, first = await stack.enter_async_context(running_gateway(tmp_path, config))
        response = await submit(session, key.key, url, model="remote", n=2)
        job_id = (await response.json())["id"]

        async def first_run_started() -> bool:
            return len(fake_upstream.requests) == 1

        await eventually(first_run_started, timeout=10)
        first.send_signal(signal.SIGTERM)
        log_path = tmp_path / f"gateway-{url.rsplit(':', 1)[1]}.log"

        async def stopping() -> bool:  # it no longer listens, and waits for its job
            try:
                async with session.get(f"{url}/healthz"):
                    return False
            except aiohttp.ClientError:
                return True

        await eventually(stopping, timeout=10)
        assert first.poll() is None
        fake_upstream.release.set()  # the run finishes within the grace
        assert await asyncio.to_thread(first.wait, 20) == 0
        row = await _job_row(db, job_id)
        assert row["status"] == "succeeded"
        assert row["attempts"] == 1
        assert row["settled_at"] is not None
        assert len(fake_upstream.requests) == 1
        assert "handed back" not in log_path.read_text()


async def test_200_jobs_over_two_processes_meet_the_quota_exactly(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey, db: asyncpg.Connection
):
    config = _own_namespace(raw_config, concurrency=8)
    key = await make_key("pro", requests_per_minute=100_000, images_per_day=150)
    async with AsyncExitStack() as stack:
        urls = [
            (await stack.enter_async_context(running_gateway(tmp_path, config)))[0]
            for _ in range(2)
        ]
        connector = aiohttp.TCPConnector(limit=100)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        targets = itertools.cycle(urls)

        async def one(url: str) -> tuple[int, str | None]:
            async with await submit(session, key.key, url) as response:
                body = await response.json()
                return response.status, body.get("id")

        answers = await asyncio.gather(*(one(next(targets)) for _ in range(200)))
        statuses = [status for status, _ in answers]
        assert statuses.count(202) == 150
        assert statuses.count(429) == 50
        ids = [job_id for status, job_id in answers if status == 202]

        async def all_settled() -> object:
            done = await db.fetchval(
                "SELECT count(*) FROM image_jobs WHERE id = ANY($1) AND settled_at IS NOT NULL",
                ids,
            )
            return True if done == 150 else done

        await eventually(all_settled, timeout=60)
        rows = await db.fetch(
            "SELECT status, attempts, delivered FROM image_jobs WHERE id = ANY($1)", ids
        )
        assert {(r["status"], r["attempts"], r["delivered"]) for r in rows} == {("succeeded", 1, 1)}
        job = await wait_for_job(session, key.key, ids[0], urls[1])
        assert job["usage"] == {"images": 1}

        async def charged() -> object:
            rows = await usage_rows(db, key.key_id)
            return True if rows == {today(): 150} else rows

        await eventually(charged, timeout=10)


async def test_a_lost_queue_is_rebuilt_from_postgres(
    make_app: MakeGateway, make_key: MakeKey, db: asyncpg.Connection
):
    submitter = await make_app({"jobs": {"work": False}})
    key = await make_key()
    ids = [(await (await submit(submitter.client, key.key)).json())["id"] for _ in range(3)]
    runner = submitter.services.jobs
    assert runner is not None
    # Redis loses everything of the queue (a restart without persistence).
    await submitter.services.redis.delete(runner.queue.stream)
    worker = await make_app()
    for job_id in ids:
        job = await wait_for_job(worker.client, key.key, job_id)
        assert job["status"] == "succeeded"
    assert (await submitter.client.get(f"{JOBS}/{ids[0]}", headers={})).status == 401


async def test_racing_retries_over_two_processes_make_one_call_and_one_charge(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    config = merge(_own_namespace(raw_config), upstream_config(fake_upstream))
    key = await make_key("pro")
    fake_upstream.mode = "hang"
    body = {"prompt": "a lighthouse", "size": "256x256", "model": "remote", "n": 2}
    headers = {"Authorization": f"Bearer {key.key}", "Idempotency-Key": "race-1"}
    async with AsyncExitStack() as stack:
        urls = [
            (await stack.enter_async_context(running_gateway(tmp_path, config)))[0]
            for _ in range(2)
        ]
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def one(url: str) -> tuple[int, bytes]:
            async with session.post(
                f"{url}/v1/images/generations", json=body, headers=headers
            ) as response:
                return response.status, await response.read()

        racing = [asyncio.create_task(one(url)) for url in urls * 10]

        async def first_call_made() -> bool:
            return len(fake_upstream.requests) >= 1

        await eventually(first_call_made, timeout=10)

        async def all_but_one_answered() -> object:
            done = sum(task.done() for task in racing)
            return True if done == len(racing) - 1 else done

        await eventually(all_but_one_answered, timeout=10)  # the first still runs
        fake_upstream.release.set()
        answers = await asyncio.gather(*racing)
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] + [409] * 19
        winner = next(body for status, body in answers if status == 200)
        # A retry afterwards, on either process, gets the same answer.
        for url in urls:
            status, replayed = await one(url)
            assert status == 200
            assert replayed == winner
        assert len(fake_upstream.requests) == 1

        async def charged_once() -> object:
            rows = await usage_rows(db, key.key_id)
            return True if rows == {today(): 2} else rows

        await eventually(charged_once, timeout=10)
