"""Signed webhooks when a job ends, verified as a receiver would (``standardwebhooks``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks.store import delivery_done
from tests.support.accounts import new_account, new_key
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import bearer, expect_error
from tests.support.jobs import JOBS, submit, wait_for_job
from tests.support.metrics import metric_total
from tests.support.waiting import eventually

#: Webhooks to 127.0.0.1 over http, retried quickly, and no poll for due webhooks within
#: a test: a job ending wakes its process's sender, which wakes for its own retries.
LOCAL_WEBHOOKS = {
    "egress": {"allow": ["127.0.0.1"]},
    "webhooks": {"allow_http": True, "backoff_seconds": 0.05, "poll_interval_seconds": 3600},
}


@dataclass
class Receiver:
    """A webhook receiver: answers ``statuses`` in turn (then 204), keeps what came."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 204
        headers = {"Location": "http://127.0.0.1:1/elsewhere"} if status == 302 else None
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    found.url = f"http://127.0.0.1:{server.port}/hook"
    yield found
    await server.close()


async def _account_with_key(gateway: Gateway) -> tuple[Any, str, str]:
    """An account, its API key and its webhook secret."""
    account = await new_account(gateway)
    key = (await new_key(gateway, account))["key"]
    response = await gateway.client.post("/v1/webhooks/secret", headers=account.headers)
    assert response.status == 201
    secret = (await response.json())["secret"]
    assert secret.startswith("whsec_")
    return account, key, secret


async def test_a_finished_job_posts_a_signed_webhook(
    make_app: MakeGateway, receiver: Receiver, db: asyncpg.Connection
):
    gateway = await make_app(LOCAL_WEBHOOKS)
    _, key, secret = await _account_with_key(gateway)
    job = await (await submit(gateway.client, key, webhook_url=receiver.url)).json()
    await wait_for_job(gateway.client, key, job["id"])

    async def delivered() -> bool:
        return len(receiver.received) == 1

    await eventually(delivered, timeout=10)
    headers, body = receiver.received[0]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "image.job.succeeded"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["status"] == "succeeded"
    assert headers["webhook-id"] == f"msg_{job['id']}"
    # Signed with the user's secret only: another one does not verify.
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(body, headers)

    async def logged() -> object:  # written once the receiver has answered
        rows = await db.fetch(
            "SELECT attempt, status_code FROM webhook_deliveries WHERE job_id = $1", job["id"]
        )
        found = [(r["attempt"], r["status_code"]) for r in rows]
        return True if found == [(1, 204)] else found

    await eventually(logged, timeout=5)


async def test_failed_deliveries_are_retried_with_the_same_id(
    make_app: MakeGateway, receiver: Receiver, db: asyncpg.Connection
):
    receiver.statuses = [500, 302]  # a redirect is not followed: it is a failure too
    gateway = await make_app(LOCAL_WEBHOOKS)
    _, key, secret = await _account_with_key(gateway)
    job = await (await submit(gateway.client, key, webhook_url=receiver.url)).json()

    async def three() -> bool:
        return len(receiver.received) == 3

    await eventually(three, timeout=15)
    assert len({headers["webhook-id"] for headers, _ in receiver.received}) == 1
    for headers, body in receiver.received:
        Webhook(secret).verify(body, headers)

    async def logged() -> object:
        rows = await db.fetch(
            "SELECT attempt, status_code, error IS NOT NULL AS failed FROM webhook_deliveries"
            " WHERE job_id = $1 ORDER BY attempt",
            job["id"],
        )
        found = [(r["attempt"], r["status_code"], r["failed"]) for r in rows]
        # The redirect is refused by the client (no status recorded, an error instead).
        return True if found == [(1, 500, False), (2, None, True), (3, 204, False)] else found

    await eventually(logged, timeout=5)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 3  # delivered: no more
    text = await (await gateway.client.get("/metrics")).text()
    assert metric_total(text, "gateway_webhook_deliveries_total", outcome="retry") == 2
    assert metric_total(text, "gateway_webhook_deliveries_total", outcome="delivered") == 1
    assert metric_total(text, "gateway_webhook_delivery_seconds_count") == 1


async def test_delivery_gives_up_after_max_attempts(
    make_app: MakeGateway, receiver: Receiver, db: asyncpg.Connection
):
    receiver.statuses = [503] * 10
    gateway = await make_app(
        {**LOCAL_WEBHOOKS, "webhooks": {**LOCAL_WEBHOOKS["webhooks"], "max_attempts": 2}}
    )
    _, key, _ = await _account_with_key(gateway)
    job = await (await submit(gateway.client, key, webhook_url=receiver.url)).json()

    async def two() -> bool:
        return len(receiver.received) == 2

    await eventually(two, timeout=10)
    await asyncio.sleep(0.8)
    assert len(receiver.received) == 2
    row = await db.fetchrow(
        "SELECT webhook_next_at, webhook_done_at FROM image_jobs WHERE id = $1", job["id"]
    )
    assert row["webhook_next_at"] is None
    assert row["webhook_done_at"] is None
    text = await (await gateway.client.get("/metrics")).text()
    assert metric_total(text, "gateway_webhook_deliveries_total", outcome="retry") == 1
    assert metric_total(text, "gateway_webhook_deliveries_total", outcome="gave_up") == 1


async def test_a_cancelled_job_sends_canceled(make_app: MakeGateway, receiver: Receiver):
    gateway = await make_app({**LOCAL_WEBHOOKS, "jobs": {"work": False}})
    _, key, secret = await _account_with_key(gateway)
    job = await (await submit(gateway.client, key, webhook_url=receiver.url)).json()
    await gateway.client.post(f"{JOBS}/{job['id']}/cancel", headers=bearer(key))

    async def delivered() -> bool:
        return len(receiver.received) == 1

    await eventually(delivered, timeout=10)
    headers, body = receiver.received[0]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "image.job.canceled"


async def test_webhook_urls_are_checked_before_anything_is_charged(
    make_app: MakeGateway, receiver: Receiver
):
    strict = await make_app({"egress": {"allow": ["127.0.0.1"]}})
    account = await new_account(strict)
    key = (await new_key(strict, account))["key"]
    # No secret yet.
    response = await submit(strict.client, key, webhook_url="https://example.com/hook")
    await expect_error(response, 400, "invalid_request", "webhook_url")
    await strict.client.post("/v1/webhooks/secret", headers=account.headers)
    for url in (
        receiver.url,  # http, and webhooks.allow_http is off
        "ftp://example.com/hook",
        "https://10.1.2.3/hook",  # a private address
        "https://user:pw@example.com/hook",
        "not a url",
    ):
        response = await submit(strict.client, key, webhook_url=url)
        await expect_error(response, 400, "invalid_request", "webhook_url")
    response = await submit(strict.client, key, webhook_url="https://example.com/hook")
    assert response.status == 202


async def test_the_secret_needs_an_access_token(app: Gateway):
    response = await app.client.post("/v1/webhooks/secret")
    await expect_error(response, 401, "invalid_token")


async def _rotate(gateway: Gateway, account: Any) -> dict[str, Any]:
    response = await gateway.client.post("/v1/webhooks/secret", headers=account.headers)
    assert response.status == 201
    body: dict[str, Any] = await response.json()
    return body


async def _webhook_of_a_job(
    gateway: Gateway, key: str, receiver: Receiver, db: asyncpg.Connection
) -> tuple[Any, bytes]:
    """Submit a job with a webhook; the headers and body of the webhook it sends, once
    the gateway has recorded it delivered."""
    seen = len(receiver.received)
    job = await (await submit(gateway.client, key, webhook_url=receiver.url)).json()

    async def delivered() -> bool:
        return len(receiver.received) == seen + 1 and await delivery_done(db, job["id"])

    await eventually(delivered, timeout=10)
    return receiver.received[-1]


def _verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


async def test_during_a_rotations_grace_both_secrets_verify_then_only_the_new(
    make_app: MakeGateway, receiver: Receiver, db: asyncpg.Connection
):
    # A grace of 36 s, and a clock the test moves on by a minute (receivers accept
    # timestamps up to 5 minutes off).
    offset = [0.0]
    grace = {"rotation_grace_hours": 0.01}
    gateway = await make_app(
        {**LOCAL_WEBHOOKS, "webhooks": {**LOCAL_WEBHOOKS["webhooks"], **grace}},
        wall_clock=lambda: time.time() + offset[0],
    )
    account, key, old = await _account_with_key(gateway)
    rotated = await _rotate(gateway, account)
    assert 30 <= rotated["previous_secret_expires_at"] - time.time() <= 36
    new = rotated["secret"]

    headers, body = await _webhook_of_a_job(gateway, key, receiver, db)
    assert len(headers["webhook-signature"].split(" ")) == 2
    # A receiver holding only the old secret verifies, as does one holding only the new.
    assert _verifies(old, headers, body)
    assert _verifies(new, headers, body)

    offset[0] = 60.0  # the grace is over
    headers, body = await _webhook_of_a_job(gateway, key, receiver, db)
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert _verifies(new, headers, body)
    assert not _verifies(old, headers, body)


async def test_without_a_grace_a_new_secret_replaces_the_old_at_once(
    make_app: MakeGateway, receiver: Receiver, db: asyncpg.Connection
):
    gateway = await make_app(
        {**LOCAL_WEBHOOKS, "webhooks": {**LOCAL_WEBHOOKS["webhooks"], "rotation_grace_hours": 0}}
    )
    account, key, old = await _account_with_key(gateway)
    new = await _rotate(gateway, account)
    assert new["previous_secret_expires_at"] is None
    headers, body = await _webhook_of_a_job(gateway, key, receiver, db)
    assert _verifies(new["secret"], headers, body)
    assert not _verifies(old, headers, body)
