"""The jobs API in one process: submit, read, list, cancel, Prefer: respond-async."""

from __future__ import annotations

import asyncio
import base64
import time

import asyncpg
import yarl

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.jobs import JOBS, submit, wait_for_job
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.usage import today, usage_rows


async def test_a_job_is_queued_then_succeeds_and_is_charged_once(
    app: Gateway, make_key: MakeKey, db: asyncpg.Connection
):
    key = await make_key()
    before = int(time.time())
    response = await submit(app.client, key.key, n=2, metadata={"order": "42"})
    assert response.status == 202, await response.text()
    job = await response.json()
    assert job["id"].startswith("job_")
    assert len(job["id"]) == 26
    assert response.headers["Location"] == f"{JOBS}/{job['id']}"
    assert job["object"] == "image.job"
    assert job["status"] == "queued"
    assert job["model"] == "local"
    assert job["n"] == 2
    assert job["metadata"] == {"order": "42"}
    assert job["created_at"] >= before
    assert set(job) == {"id", "object", "status", "created_at", "model", "n", "metadata"}

    done = await wait_for_job(app.client, key.key, job["id"])
    assert done["status"] == "succeeded"
    assert done["usage"] == {"images": 2}
    assert done["completed_at"] >= done["created_at"]
    assert len(done["data"]) == 2
    assert "error" not in done
    # Stored (response_format "url" is the jobs' default): each read signs fresh links.
    for image in done["data"]:
        assert set(image) == {"url", "revised_prompt"}
        link = yarl.URL(image["url"])
        served = await app.client.get(link.path_qs)
        assert served.status == 200
        assert (await served.read())[:4] == b"\x89PNG"
    await app.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}
    row = await db.fetchrow("SELECT attempts, settled_at FROM image_jobs WHERE id = $1", job["id"])
    assert row["attempts"] == 1
    assert row["settled_at"] is not None


async def test_b64_json_keeps_the_images_in_the_job(app: Gateway, make_key: MakeKey):
    key = await make_key()
    job = await (await submit(app.client, key.key, response_format="b64_json")).json()
    done = await wait_for_job(app.client, key.key, job["id"])
    assert done["status"] == "succeeded"
    assert set(done["data"][0]) == {"b64_json", "revised_prompt"}
    assert base64.b64decode(done["data"][0]["b64_json"])[:4] == b"\x89PNG"


async def test_prefer_respond_async_makes_a_job(app: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await app.client.post(
        "/v1/images/generations",
        json={"prompt": "a fox", "size": "256x256"},
        headers={**bearer(key.key), "Prefer": "wait=5, respond-async"},
    )
    assert response.status == 202, await response.text()
    assert response.headers["Preference-Applied"] == "respond-async"
    job = await response.json()
    assert response.headers["Location"] == f"{JOBS}/{job['id']}"
    assert job["status"] == "queued"
    assert (await wait_for_job(app.client, key.key, job["id"]))["status"] == "succeeded"

    # Any other preference leaves the call synchronous.
    response = await app.client.post(
        "/v1/images/generations",
        json={"prompt": "a fox", "size": "256x256"},
        headers={**bearer(key.key), "Prefer": "return=minimal"},
    )
    assert response.status == 200
    assert "Preference-Applied" not in response.headers


async def test_another_users_job_is_not_found(app: Gateway, make_key: MakeKey):
    owner, other = await make_key(), await make_key()
    job = await (await submit(app.client, owner.key)).json()
    for response in (
        await app.client.get(f"{JOBS}/{job['id']}", headers=bearer(other.key)),
        await app.client.post(f"{JOBS}/{job['id']}/cancel", headers=bearer(other.key)),
        await app.client.get(f"{JOBS}/job_nope", headers=bearer(owner.key)),
    ):
        await expect_error(response, 404, "not_found")
    listed = await (await app.client.get(JOBS, headers=bearer(other.key))).json()
    assert listed == {"object": "list", "data": [], "has_more": False}


async def test_list_pages_newest_first(app: Gateway, make_key: MakeKey):
    key = await make_key("pro")
    ids = [(await (await submit(app.client, key.key)).json())["id"] for _ in range(5)]
    for job_id in ids:
        await wait_for_job(app.client, key.key, job_id)
    seen: list[str] = []
    after = None
    while True:
        query = {"limit": "2", **({"after": after} if after else {})}
        page = await (await app.client.get(JOBS, params=query, headers=bearer(key.key))).json()
        assert page["object"] == "list"
        assert len(page["data"]) <= 2
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids[::-1]
    succeeded = await app.client.get(
        JOBS, params={"status": "succeeded", "limit": "100"}, headers=bearer(key.key)
    )
    assert [job["id"] for job in (await succeeded.json())["data"]] == ids[::-1]
    queued = await app.client.get(JOBS, params={"status": "queued"}, headers=bearer(key.key))
    assert (await queued.json())["data"] == []
    for params, param in (
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"status": "done"}, "status"),
        ({"after": "job_unknown"}, "after"),
    ):
        response = await app.client.get(JOBS, params=params, headers=bearer(key.key))
        await expect_error(response, 400, "invalid_request", param)


async def test_bad_bodies_are_400_and_charge_nothing(
    app: Gateway, make_key: MakeKey, db: asyncpg.Connection
):
    key = await make_key()
    for body, param in (
        ({"prompt": "x", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"prompt": "x", "metadata": {"a": "v" * 513}}, "metadata"),
        ({"prompt": "x", "metadata": {"a": 1}}, "metadata"),
        ({"prompt": "x", "metadata": "no"}, "metadata"),
        ({"prompt": "x", "n": 99}, "n"),
        ({"prompt": "x", "webhook_url": 5}, "webhook_url"),
        # Postgres keeps a job's text (text, jsonb): a NUL is refused, naming where.
        ({"prompt": "x", "metadata": {"owner": "a\u0000b"}}, "metadata.owner"),
        ({"prompt": "x", "metadata": {"a\u0000": "v"}}, "metadata"),
        ({"prompt": "a\u0000b"}, "prompt"),
        ({"prompt": "x", "negative_prompt": "\u0000"}, "negative_prompt"),
        ({"prompt": "x", "webhook_url": "https://example.com/\u0000"}, "webhook_url"),
    ):
        response = await app.client.post(JOBS, json=body, headers=bearer(key.key))
        await expect_error(response, 400, "invalid_request", param)
    await app.flush()
    assert await usage_rows(db, key.key_id) == {}
    assert await db.fetchval("SELECT count(*) FROM image_jobs WHERE user_id = $1", key.user_id) == 0


async def test_a_nul_in_a_prefer_async_generation_is_a_400(app: Gateway, make_key: MakeKey):
    """The synchronous route keeps nothing, so a NUL in its prompt is fine; made a job, it
    is kept, and refused."""
    key = await make_key()
    response = await app.client.post(
        "/v1/images/generations",
        json={"prompt": "a\u0000b", "size": "256x256", "metadata": {"k": "\u0000"}},
        headers={**bearer(key.key), "Prefer": "respond-async"},
    )
    await expect_error(response, 400, "invalid_request", "prompt")


async def test_submits_count_against_the_limits(app: Gateway, make_key: MakeKey):
    key = await make_key(images_per_day=3)
    assert (await submit(app.client, key.key, n=2)).status == 202
    response = await submit(app.client, key.key, n=2)
    await expect_error(response, 429, "daily_quota_exceeded", "n")
    assert response.headers["Retry-After"]


async def test_cancel_a_queued_job_it_never_runs(
    make_app: MakeGateway, make_key: MakeKey, db: asyncpg.Connection
):
    submitter = await make_app({"jobs": {"work": False}})  # nobody works the queue yet
    key = await make_key()
    job = await (await submit(submitter.client, key.key, n=3)).json()
    response = await submitter.client.post(f"{JOBS}/{job['id']}/cancel", headers=bearer(key.key))
    assert response.status == 200
    canceled = await response.json()
    assert canceled["status"] == "canceled"
    assert "data" not in canceled
    assert "usage" not in canceled
    # Cancelling again answers it unchanged.
    again = await submitter.client.post(f"{JOBS}/{job['id']}/cancel", headers=bearer(key.key))
    assert await again.json() == canceled
    await submitter.flush()
    assert await usage_rows(db, key.key_id) == {today(): 0}
    row = await db.fetchrow("SELECT attempts, settled_at FROM image_jobs WHERE id = $1", job["id"])
    assert row["attempts"] == 0
    assert row["settled_at"] is not None


async def test_cancel_a_running_job_stops_its_upstream_call(
    make_app: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    fake_upstream.mode = "hang"
    gateway = await make_app(upstream_config(fake_upstream))
    key = await make_key()
    job = await (await submit(gateway.client, key.key, model="remote", n=2)).json()
    async with asyncio.timeout(10):
        while not fake_upstream.requests:
            await asyncio.sleep(0.02)
    running = await gateway.client.get(f"{JOBS}/{job['id']}", headers=bearer(key.key))
    assert (await running.json())["status"] == "running"
    response = await gateway.client.post(f"{JOBS}/{job['id']}/cancel", headers=bearer(key.key))
    assert (await response.json())["status"] == "canceled"
    runner = gateway.services.jobs
    assert runner is not None
    async with asyncio.timeout(5):
        while job["id"] in runner.running:
            await asyncio.sleep(0.02)
    fake_upstream.release.set()
    await asyncio.sleep(0.2)
    final = await wait_for_job(gateway.client, key.key, job["id"])
    assert final["status"] == "canceled"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 0}


async def test_a_failed_upstream_fails_the_job_and_charges_nothing(
    make_app: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    fake_upstream.mode = "fail"
    gateway = await make_app(upstream_config(fake_upstream, retries=0))
    key = await make_key()
    job = await (await submit(gateway.client, key.key, model="remote")).json()
    done = await wait_for_job(gateway.client, key.key, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_error"
    assert done["error"]["message"]
    assert "data" not in done
    assert "usage" not in done
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 0}


async def test_a_short_answer_is_charged_what_came(
    make_app: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    db: asyncpg.Connection,
):
    fake_upstream.mode = "short"
    gateway = await make_app(upstream_config(fake_upstream))
    key = await make_key()
    job = await (await submit(gateway.client, key.key, model="remote", n=3)).json()
    done = await wait_for_job(gateway.client, key.key, job["id"])
    assert done["status"] == "succeeded"
    assert done["usage"] == {"images": 2}
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_a_job_nobody_works_in_time_fails_with_queue_timeout(
    make_app: MakeGateway, make_key: MakeKey, db: asyncpg.Connection
):
    clock = [time.time()]
    jobs = {"work": False, "queue_timeout_seconds": 30, "sweep_interval_seconds": 3600}
    gateway = await make_app({"jobs": jobs}, wall_clock=lambda: clock[0])
    key = await make_key()
    job = await (await submit(gateway.client, key.key, n=2)).json()
    clock[0] += 31
    runner = gateway.services.jobs
    assert runner is not None
    await runner.sweep()
    done = await wait_for_job(gateway.client, key.key, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "queue_timeout"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 0}


async def test_cancelling_a_finished_job_answers_it_unchanged(app: Gateway, make_key: MakeKey):
    key = await make_key()
    job = await (await submit(app.client, key.key)).json()
    done = await wait_for_job(app.client, key.key, job["id"])
    response = await app.client.post(f"{JOBS}/{job['id']}/cancel", headers=bearer(key.key))
    assert response.status == 200
    assert await response.json() == done


async def test_a_job_interrupted_max_attempts_times_fails_and_charges_nothing(
    make_app: MakeGateway, make_key: MakeKey, db: asyncpg.Connection
):
    submitter = await make_app({"jobs": {"work": False}})
    key = await make_key()
    job = await (await submit(submitter.client, key.key, n=2)).json()
    # As if three processes had died running it.
    await db.execute(
        "UPDATE image_jobs SET status = 'running', attempts = 3,"
        " heartbeat_at = now() - interval '1 hour' WHERE id = $1",
        job["id"],
    )
    worker = await make_app({"jobs": {"max_attempts": 3}})
    done = await wait_for_job(worker.client, key.key, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "attempts_exhausted"
    await worker.flush()
    assert await usage_rows(db, key.key_id) == {today(): 0}
