"""Delivering webhooks: every process sends the due ones of its queue, with retries.

A job's webhook is due from the moment the job ends (set in the same update). A process
claims a few due ones at a time (``FOR UPDATE SKIP LOCKED``, a lease of twice the
delivery timeout), POSTs each through the egress client (the egress policy, no
redirects), and logs the attempt in ``webhook_deliveries``. A 2xx ends it; anything
else is tried again after ``backoff_seconds * 2^(attempt-1)`` (+-50 % jitter), up to
``webhooks.max_attempts`` attempts. Delivery is at least once: ``webhook-id`` stays the
same across retries, so receivers drop duplicates by it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.config import WebhooksConfig
from gateway.db.pool import connection
from gateway.egress.client import EgressClient, EgressError
from gateway.jobs.store import JobRow
from gateway.tasks import raise_if_cancelled
from gateway.webhooks import store
from gateway.webhooks.signing import SecretDeriver, signature_header

__all__ = ["WebhookSender", "webhook_id"]

log = logging.getLogger(__name__)

_MAX_ANSWER_BYTES = 64 * 1024
_POLL_SECONDS = 0.5

#: The job as the API shows it, as plain JSON values.
RenderJob = Callable[[JobRow], Awaitable[Any]]


def webhook_id(job_id: str) -> str:
    """The same for every delivery of a job's webhook."""
    return f"msg_{job_id}"


class WebhookSender:
    def __init__(
        self,
        *,
        config: WebhooksConfig,
        namespace: str,
        pool: Any,
        egress: EgressClient,
        secrets: SecretDeriver,
        render: RenderJob,
        wall_clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._namespace = namespace
        self._pool = pool
        self._egress = egress
        self._secrets = secrets
        self._render = render
        self._clock = wall_clock
        self._encode = msgspec.json.Encoder().encode

    async def run(self) -> None:
        """Deliver due webhooks until cancelled."""
        while True:
            try:
                while await self.deliver_due():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                log.warning("webhook delivery round failed (%s)", exc)
            await asyncio.sleep(_POLL_SECONDS)

    async def deliver_due(self) -> int:
        """Send the webhooks due now (a batch); how many were tried."""
        now = self._clock()
        async with connection(self._pool) as conn:
            jobs = await store.claim_due(
                conn,
                self._namespace,
                now=now,
                lease_seconds=2 * self._config.timeout_seconds,
            )
        await asyncio.gather(*(self._deliver(job) for job in jobs))
        return len(jobs)

    async def _deliver(self, job: JobRow) -> None:
        config = self._config
        message_id = webhook_id(job.id)
        async with connection(self._pool) as conn:
            nonces = await store.find_nonces(conn, job.user_id, now=self._clock())
        status_code: int | None = None
        error: str | None = None
        if not nonces or job.webhook_url is None:
            error = "the user has no webhook secret"
        else:
            completed = job.completed_at or dt.datetime.now(dt.UTC)
            body = self._encode(
                {
                    "type": f"image.job.{job.status}",
                    "timestamp": completed.isoformat().replace("+00:00", "Z"),
                    "data": await self._render(job),
                }
            )
            timestamp = int(self._clock())
            keys = [self._secrets.secret(str(job.user_id), nonce) for nonce in nonces]
            headers = {
                "Content-Type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(keys, message_id, timestamp, body),
            }
            try:
                answer = await self._egress.request(
                    "POST",
                    job.webhook_url,
                    headers=headers,
                    body=body,
                    max_bytes=_MAX_ANSWER_BYTES,
                    max_seconds=config.timeout_seconds,
                )
                status_code = answer.status
            except EgressError as exc:
                error = exc.reason
        delivered = status_code is not None and 200 <= status_code < 300
        next_at = None
        if not delivered and job.webhook_attempts < config.max_attempts and nonces:
            backoff = config.backoff_seconds * 2 ** (job.webhook_attempts - 1)
            next_at = self._clock() + backoff * random.uniform(0.5, 1.5)
        if not delivered:
            log.info(
                "webhook %s attempt %d failed (%s)",
                message_id,
                job.webhook_attempts,
                status_code if status_code is not None else error,
            )
        async with connection(self._pool) as conn:
            await store.record_attempt(
                conn,
                job,
                message_id,
                status_code=status_code,
                error=error,
                now=self._clock(),
                next_at=next_at,
                delivered=delivered,
            )
