"""Delivering webhooks: every process sends the due ones of its queue, with retries.

A job's webhook is due from the moment the job ends (set in the same update). A process
claims a few due ones at a time (``FOR UPDATE SKIP LOCKED``, a lease of twice the
delivery timeout), POSTs each through the egress client (the egress policy, no
redirects), and logs the attempt in ``webhook_deliveries``. A 2xx ends it; anything
else is tried again after ``backoff_seconds * 2^(attempt-1)`` (+-50 % jitter), up to
``webhooks.max_attempts`` attempts. Delivery is at least once: ``webhook-id`` stays the
same across retries, so receivers drop duplicates by it.

When to look: every process that can end a job (a worker finishing or failing it, a
cancel, a sweep) runs a sender, and wakes it at once (:meth:`WebhookSender.wake`); the
sender also wakes for the retries it scheduled itself. Other processes are not told: the
one that ended the job sends its webhook, and telling every process would make each of
them query for it. What nobody announced (the retries of a process that died, a lease
that ran out) is found by a slow poll, every ``webhooks.poll_interval_seconds``. A
sender that sleeps makes no query: an idle gateway costs Postgres one query per poll.
Deliveries run in the background, so a slow receiver never holds up the next webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.config import WebhooksConfig
from gateway.db.pool import connection
from gateway.egress.client import EgressClient, EgressError
from gateway.jobs.store import JobRow
from gateway.metrics import Metrics
from gateway.tasks import raise_if_cancelled
from gateway.webhooks import store
from gateway.webhooks.signing import SecretDeriver, signature_header

__all__ = ["WebhookSender", "webhook_id"]

log = logging.getLogger(__name__)

_MAX_ANSWER_BYTES = 64 * 1024
#: Deliveries in flight at most (each bounded by ``webhooks.timeout_seconds``).
_IN_FLIGHT = 64
#: Due webhooks claimed per query.
_BATCH = 20

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
        metrics: Metrics,
        wall_clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._namespace = namespace
        self._pool = pool
        self._egress = egress
        self._secrets = secrets
        self._render = render
        self._clock = wall_clock
        self._encode = msgspec.json.Encoder().encode
        self._wake = asyncio.Event()
        #: When the retries this process scheduled are due (wall-clock seconds).
        self._retries: list[float] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._full = False

    def wake(self) -> None:
        """A webhook may be due now (a job ended in this process): look at once."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due webhooks until cancelled (deliveries in flight are cancelled too:
        their leases run out and another round sends them)."""
        try:
            while True:
                self._wake.clear()  # before the query: a wake-up during it is not lost
                looked_at = self._clock()
                try:
                    while await self.deliver_due() == _BATCH:
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    raise_if_cancelled()
                    log.warning("webhook delivery round failed (%s)", exc)
                while self._retries and self._retries[0] <= looked_at:
                    heapq.heappop(self._retries)  # the round just made looked for them
                wait = self._config.poll_interval_seconds
                if self._retries:
                    wait = min(wait, max(0.0, self._retries[0] - self._clock()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def deliver_due(self) -> int:
        """Claim the webhooks due now (a batch, as many as there is room for) and start
        sending them; how many were claimed."""
        room = min(_BATCH, _IN_FLIGHT - len(self._in_flight))
        self._full = room < _BATCH
        if room <= 0:
            return 0
        now = self._clock()
        async with connection(self._pool) as conn:
            jobs = await store.claim_due(
                conn,
                self._namespace,
                now=now,
                lease_seconds=2 * self._config.timeout_seconds,
                limit=room,
            )
        for job, nonces in jobs:
            task = asyncio.create_task(self._deliver_quietly(job, nonces))
            self._in_flight.add(task)
            task.add_done_callback(self._delivered)
        return len(jobs)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._full:  # the last round had no room for a whole batch: look again
            self._full = False
            self._wake.set()

    async def _deliver_quietly(self, job: JobRow, nonces: list[str]) -> None:
        try:
            await self._deliver(job, nonces)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # its lease runs out, and it is tried again
            log.warning("webhook of job %s not sent (%s)", job.id, exc)

    async def _deliver(self, job: JobRow, nonces: list[str]) -> None:
        """Send ``job``'s webhook signed with the secrets of ``nonces`` (none: the user
        has no secret any more, and it is not sent)."""
        config = self._config
        message_id = webhook_id(job.id)
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
            heapq.heappush(self._retries, next_at)
            self._wake.set()  # the sender's next look is now due sooner
        metrics = self._metrics
        outcome = "delivered" if delivered else "retry" if next_at is not None else "gave_up"
        metrics.labelled(metrics.webhook_deliveries, outcome).inc()
        if delivered and job.completed_at is not None:
            waited = self._clock() - job.completed_at.timestamp()
            metrics.labelled(metrics.webhook_delivery_seconds).observe(max(0.0, waited))
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
