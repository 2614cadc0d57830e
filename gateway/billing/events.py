"""Sending usage and credit events to a billing system, as CloudEvents.

Triggers in Postgres (migration 0009) write an event for every change of a key's daily
image count (what the usage flush writes: ``usage.images``, with the change and the
day's total) and for every credit ledger entry (``credits.<kind>``), in the same
transaction as the change: an event exists if and only if the change does. Every
process runs a :class:`BillingEventSender`, which claims the oldest due events
(``FOR UPDATE SKIP LOCKED``, leased for twice the POST's timeout), POSTs them in one
JSON batch (``application/cloudevents-batch+json``, the CloudEvents JSON batch format)
through the egress client (the egress policy, no redirects), and deletes them once the
receiver answers 2xx. Anything else postpones the batch (5 s, doubled per attempt,
jittered, up to ``billing.max_backoff_seconds``): events wait in Postgres while the
receiver is down, never dropped. Delivery is at least once; an event's ``id`` (its
row's) and ``source`` stay the same on every retry, so the receiver drops duplicates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable
from typing import Any

import msgspec

from gateway.config import BillingConfig
from gateway.db import billing as store
from gateway.db.pool import connection
from gateway.egress.client import EgressClient, EgressError
from gateway.metrics import Metrics

__all__ = ["CONTENT_TYPE", "BillingEventSender", "cloud_event"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents-batch+json"
_FIRST_BACKOFF_SECONDS = 5.0
_MAX_ANSWER_BYTES = 64 * 1024


def cloud_event(row: Any, source: str) -> dict[str, Any]:
    """The CloudEvent (JSON format, spec 1.0) of an outbox row."""
    occurred: dt.datetime = row["occurred_at"]
    return {
        "specversion": "1.0",
        "id": str(row["id"]),
        "source": source,
        "type": f"gateway.{row['type']}",
        "subject": str(row["user_id"]),
        "time": occurred.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": msgspec.Raw(row["data"].encode()),
    }


class BillingEventSender:
    def __init__(
        self,
        *,
        config: BillingConfig,
        pool: Any,
        egress: EgressClient,
        metrics: Metrics,
        wall_clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._pool = pool
        self._egress = egress
        self._metrics = metrics
        self._clock = wall_clock
        self._encode = msgspec.json.Encoder().encode

    async def run(self) -> None:
        """Send due events every ``billing.interval_seconds`` until cancelled."""
        while True:
            try:
                while await self.send_due() == self._config.batch_size:
                    pass  # a full batch: there may be more
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Postgres away: the next round tries again
                log.warning("sending billing events failed (%s)", exc)
            await asyncio.sleep(self._config.interval_seconds)

    async def send_due(self) -> int:
        """Send one batch of due events; how many were claimed."""
        config = self._config
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        async with connection(self._pool) as conn:
            rows = await store.claim_events(
                conn,
                limit=config.batch_size,
                lease_seconds=2 * config.timeout_seconds,
                now=now,
            )
        if not rows:
            return 0
        body = self._encode([cloud_event(row, config.source) for row in rows])
        error = None
        try:
            answer = await self._egress.request(
                "POST",
                config.events_url,
                headers={"Content-Type": CONTENT_TYPE},
                body=body,
                max_bytes=_MAX_ANSWER_BYTES,
                max_seconds=config.timeout_seconds,
            )
            if not 200 <= answer.status < 300:
                error = f"HTTP {answer.status}"
        except EgressError as exc:
            error = exc.reason
        ids = [row["id"] for row in rows]
        async with connection(self._pool) as conn:
            if error is None:
                await store.forget_events(conn, ids)
            else:
                attempts = max(row["attempts"] for row in rows)
                wait = min(
                    config.max_backoff_seconds,
                    _FIRST_BACKOFF_SECONDS * 2 ** min(attempts - 1, 30),
                )
                wait *= random.uniform(0.5, 1.0)
                await store.postpone_events(conn, ids, now + dt.timedelta(seconds=wait))
                log.warning(
                    "billing events not taken (%s); %d sent again in %.0f s",
                    error,
                    len(ids),
                    wait,
                )
        outcome = "sent" if error is None else "retry"
        self._metrics.labelled(self._metrics.billing_events, outcome).inc(len(ids))
        return len(rows)
