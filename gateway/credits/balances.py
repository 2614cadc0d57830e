"""A user's credits as customers and operators see them, and operators' changes to them.

The balances live in Redis, in the user's shard, where the admission script checks and
charges them (see :mod:`gateway.limits.admission`); when Redis has lost them they are
rebuilt from the ledger in Postgres (:func:`gateway.db.credits.balances_of`), by
whichever script first needs them. Reading them never writes: a user whose balances
are not in Redis is answered from the ledger.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.credits.months import month_of_day, next_month_start
from gateway.limits.decision import SeedSource
from gateway.redis.layout import RedisLayout
from gateway.redis.lua import load_script

__all__ = [
    "CHANGED",
    "KEY_REUSED",
    "REPEATED",
    "TOO_FEW",
    "Change",
    "CreditBook",
    "Credits",
]

CHANGED, REPEATED, KEY_REUSED, TOO_FEW, _NEEDS_BALANCES = 1, 2, 3, 4, 5
#: How long an operator's idempotency key is remembered in Redis (the ledger's entry id
#: keeps Postgres from taking the change twice for ever).
_CHANGE_MARKER_SECONDS = 90 * 86400


@dataclass(frozen=True, slots=True)
class Credits:
    """A user's balances now."""

    #: The plan's monthly allowance; None: the plan has no credit limit.
    allowance: int | None
    #: What is left of this month's allowance (the allowance itself before the first
    #: request of the month, when it is set).
    monthly: int
    purchased: int
    #: When this month's allowance ends (the next one is set).
    resets_at: dt.datetime

    @property
    def total(self) -> int:
        return self.monthly + self.purchased


@dataclass(frozen=True, slots=True)
class Change:
    """What an operator's change did (``status``: :data:`CHANGED`, :data:`REPEATED`,
    :data:`KEY_REUSED` or :data:`TOO_FEW`) and the purchased credits after it."""

    status: int
    purchased: int
    entry_id: str


class CreditBook:
    def __init__(
        self,
        redis: Redis,
        layout: RedisLayout,
        seeds: SeedSource,
        clock: Callable[[], float],
        *,
        timeout: float = 2.0,
    ) -> None:
        """``clock``: wall-clock seconds since the epoch (which month it is)."""
        self._redis = redis
        self._layout = layout
        self._seeds = seeds
        self._clock = clock
        self._timeout = timeout
        self._change = load_script(redis, "change", package="gateway.credits")

    def _month(self) -> int:
        return month_of_day(int(self._clock() // 86400))

    async def read(self, user_id: str, allowance: int | None) -> Credits:
        """The user's balances (``allowance``: the plan's ``monthly_credits``)."""
        month = self._month()
        async with asyncio.timeout(self._timeout):
            held = await self._redis.hmget(self._layout.credits(user_id), ["m", "mb", "pb"])
        if held[0] is None:
            balances = await self._seeds.balances_for(user_id, month)
            held_month = month if balances.monthly >= 0 else -1
            monthly, purchased = max(balances.monthly, 0), balances.purchased
        else:
            held_month, monthly, purchased = (int(v or 0) for v in held)
        if allowance is None:
            monthly = 0
        elif held_month != month:  # set at the month's first request
            monthly = allowance
        return Credits(
            allowance=allowance,
            monthly=monthly,
            purchased=purchased,
            resets_at=next_month_start(month),
        )

    async def change(self, user_id: str, amount: int, reason: str, idempotency_key: str) -> Change:
        """Add ``amount`` purchased credits (take them away when negative), once per
        ``idempotency_key`` for this user. Raises Redis and Postgres errors."""
        layout = self._layout
        shard = layout.shard_of(user_id)
        digest = hashlib.sha256(f"{user_id}\0{idempotency_key}".encode()).hexdigest()[:40]
        entry_id = f"change:{digest}"
        fingerprint = hashlib.sha256(f"{amount}\0{reason}".encode()).hexdigest()[:32]
        keys = (layout.credits(user_id), layout.ledger(shard), f"{layout.tag(shard)}{entry_id}")
        args: list[Any] = [
            amount,
            entry_id,
            user_id,
            reason,
            "grant" if amount > 0 else "adjust",
            fingerprint,
            _CHANGE_MARKER_SECONDS,
            "",
            "",
            "",
        ]
        for _ in range(2):
            async with asyncio.timeout(self._timeout):
                reply = await self._change(keys=keys, args=args)
            if int(reply[0]) != _NEEDS_BALANCES:
                return Change(int(reply[0]), int(reply[2]), entry_id)
            month = self._month()
            balances = await self._seeds.balances_for(user_id, month)
            args[7:10] = [month, balances.monthly, balances.purchased]
        raise RuntimeError("the balances could not be rebuilt")  # pragma: no cover
