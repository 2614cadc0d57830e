"""How a job is charged: exactly once, for the images of the attempt that succeeded.

The design, keyed by the job:

1. **Submit.** The admission script (one round trip, as for a synchronous call) checks
   the rate limit and reserves the job's ``n`` images. The reservation is then handed
   from the process to the job: the process's journal entry is closed and the job's
   row (``reserved``, ``charge_day``, ``charge_member`` — the admission's unique member,
   which names the reservation's once-only marker in Redis) is written to Postgres. A
   process killed between the two over-counts that one reservation (the safe side:
   usage never under-counts a delivered image); the other order could hand the images
   back through the journal *and* deliver them through the job.
2. **Attempts.** However often a job runs (a process killed mid-job, a claim after the
   visibility timeout), only the attempt that still owns the job (``attempts`` equal to
   its own number, status ``running``) can record a result; a slower, superseded attempt
   matches no row and its images are dropped, not charged. A cancel or a sweep (queue
   timeout, attempts exhausted) takes the same conditional update, so a job reaches
   exactly one terminal status.
3. **Settle.** Whoever made the terminal transition gives back ``reserved - delivered``
   images with ``release.lua``, whose marker (``settled:<member>``) lets it count once
   only, then sets ``settled_at`` (a job that delivered all it reserved has nothing to
   give back: its terminal update sets ``settled_at`` itself). A process killed between
   the two leaves the row unsettled; every process's sweeper settles such rows (the
   marker makes a repeat, or a race between two sweepers, give back nothing more).

So a job is charged ``delivered`` images (0 when it failed or was cancelled) no matter
how many processes ran it or died running it, and the same for credits: the reservation
of ``reserved * charge_price`` credits is settled by the same once-only release, which
gives back ``(reserved - delivered) * charge_price`` (the purchased part first, up to
``charge_purchased``; the allowance part only while ``charge_month`` lasts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gateway.db.pool import connection
from gateway.jobs import store
from gateway.jobs.store import JobRow
from gateway.limits.admission import Admission, Refund
from gateway.usage.labels import usage_label

__all__ = ["Settlement"]

log = logging.getLogger(__name__)


class Settlement:
    def __init__(self, pool: Any, admission: Admission, wall_clock: Callable[[], float]) -> None:
        self._pool = pool
        self._admission = admission
        self._clock = wall_clock

    async def settle(self, job: JobRow) -> None:
        """Give back what ``job`` (finished) did not deliver, once; raises if Redis or
        Postgres cannot be reached (the sweeper tries again)."""
        if job.settled_at is not None:  # settled as it ended (nothing to give back)
            return
        images = job.reserved - job.delivered
        if images > 0:
            await self._admission.give_back(
                Refund(
                    user_id=str(job.user_id),
                    key_id=str(job.api_key_id),
                    day=job.charge_day,
                    member=job.charge_member,
                    images=images,
                    credits=images * job.charge_price,
                    purchased=job.charge_purchased,
                    month=job.charge_month,
                    reference=job.id,
                    label=usage_label(job.model, job.charge_backend),
                )
            )
        async with connection(self._pool) as conn:
            await store.mark_settled(conn, job.id, now=self._clock())

    async def attribute(self, job: JobRow, backend: str) -> None:
        """Count the images ``job`` delivered under ``backend``, which made them, when it
        is not the backend planned at admission (a fallback); never raises."""
        if backend == job.charge_backend or job.delivered <= 0:
            return
        await self._admission.attribute_usage(
            str(job.user_id),
            str(job.api_key_id),
            job.charge_day,
            usage_label(job.model, job.charge_backend),
            usage_label(job.model, backend),
            job.delivered,
            job.delivered * job.charge_price,
        )

    async def settle_quietly(self, job: JobRow) -> None:
        """:meth:`settle`, logging a failure instead of raising (the sweeper retries)."""
        try:
            await self.settle(job)
        except Exception as exc:
            log.warning("could not settle job %s yet (%s); the sweeper will", job.id, exc)
