"""Admission without Redis, for ``redis.on_failure: open``.

While Redis is unreachable each process enforces the key's limits on its own: a rolling
60-second window and the daily quota, counted from today's count as Postgres last saw
it. The limits are approximate (N processes may together admit up to N times a limit,
and the daily base lags by up to one flush interval); what is admitted is counted here
and added to Redis (and so to Postgres) as soon as Redis answers again.

A process killed while Redis is still down loses what it counted locally: the price
of staying open. The default, ``closed``, never admits without Redis.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

from gateway.keys.cache import KeyRecord
from gateway.limits.decision import (
    ADMITTED,
    OVER_QUOTA,
    RATE_LIMITED,
    Decision,
    SeedSource,
    usage_seed,
)
from gateway.redis.layout import RedisLayout
from gateway.redis.lua import load_script

__all__ = ["LocalAdmission"]

log = logging.getLogger(__name__)

_WINDOW = 60.0


class LocalAdmission:
    def __init__(
        self,
        redis: Redis,
        layout: RedisLayout,
        seeds: SeedSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._layout = layout
        self._seeds = seeds
        self._clock = clock
        self._reconcile = load_script(redis, "reconcile")
        self._windows: dict[str, collections.deque[float]] = {}
        #: (user id, key id, day) -> images admitted here and not yet added to Redis.
        self.unsynced: dict[tuple[str, str, int], int] = {}
        #: The same by the label they are counted under (model and backend).
        self._labels: dict[tuple[str, str, int], dict[str, int]] = {}
        #: (key id, day) -> today's count from Postgres when the outage began.
        self._base: dict[tuple[str, int], int] = {}

    async def admit(self, record: KeyRecord, n: int, label: str = "") -> Decision:
        now = self._clock()
        day = int(now // 86400)
        to_midnight = (day + 1) * 86400 - int(now)
        window = self._windows.setdefault(record.key_id, collections.deque())
        while window and window[0] <= now - _WINDOW:
            window.popleft()
        slot = (record.key_id, day)
        if slot not in self._base:
            try:
                self._base[slot] = await self._seeds.count_for(record.key_id, day)
            except Exception:  # Postgres down too: count from zero, reconcile later
                self._base[slot] = 0
        counted = (record.user_id, record.key_id, day)
        used = self._base[slot] + self.unsynced.get(counted, 0)
        outcome = ADMITTED
        if len(window) >= record.requests_per_minute:
            outcome = RATE_LIMITED
        elif used + n > record.images_per_day:
            outcome = OVER_QUOTA
        else:
            window.append(now)
            self.unsynced[counted] = self.unsynced.get(counted, 0) + n
            labels = self._labels.setdefault(counted, {})
            labels[label] = labels.get(label, 0) + n
            used += n
        reset = window[0] + _WINDOW - now if window else 0.0
        return Decision(
            outcome=outcome,
            day=day,
            requests_limit=record.requests_per_minute,
            requests_in_window=len(window),
            requests_reset=reset,
            images_limit=record.images_per_day,
            images_used=used,
            images_reset=to_midnight,
        )

    def release(self, user_id: str, key_id: str, day: int, images: int, label: str = "") -> None:
        slot = (user_id, key_id, day)
        left = self.unsynced.get(slot, 0) - images
        if left > 0:
            self.unsynced[slot] = left
        else:
            self.unsynced.pop(slot, None)
        labels = self._labels.get(slot, {})
        if labels.get(label, 0) > images:
            labels[label] -= images
        else:
            labels.pop(label, None)

    async def reconcile(self) -> int:
        """Add what was counted here to Redis; how many counters were sent.

        Raises (keeping the rest) if Redis is still unreachable.
        """
        sent = 0
        while self.unsynced:
            slot, images = next(iter(self.unsynced.items()))
            user_id, key_id, day = slot
            base = await self._seeds.count_for(key_id, day)
            seed = usage_seed(await self._seeds.usage_for(key_id, day))
            labels = self._labels.get(slot, {})
            layout = self._layout
            await self._reconcile(
                keys=(
                    layout.counter(user_id, key_id, day),
                    layout.pending(layout.shard_of(user_id)),
                    layout.usage(user_id, key_id, day),
                ),
                args=(images, base, f"{key_id}:{day}", seed, *_flat(labels)),
            )
            self.unsynced.pop(slot)
            self._labels.pop(slot, None)
            sent += 1
        if sent:
            log.warning("reconciled %d counters admitted while Redis was unreachable", sent)
        self._base.clear()
        self._windows.clear()
        return sent


def _flat(labels: dict[str, int]) -> list[str | int]:
    """``label, images, label, images, ...``"""
    return [item for pair in labels.items() for item in pair]
