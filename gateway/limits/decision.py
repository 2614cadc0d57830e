"""What an admission decides: the outcome codes, :class:`Decision` and where seeds come from.

Shared by the Redis admission (:mod:`gateway.limits.admission`) and the local fallback
(:mod:`gateway.limits.local`), so that neither imports the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from gateway.limits.journal import NO_SLOT

__all__ = [
    "ADMITTED",
    "NEEDS_CREDITS",
    "NEEDS_SEED",
    "NO_CREDITS",
    "OVER_QUOTA",
    "RATE_LIMITED",
    "Balances",
    "Decision",
    "SeedSource",
    "usage_seed",
]

NEEDS_SEED, ADMITTED, RATE_LIMITED, OVER_QUOTA, NO_CREDITS, NEEDS_CREDITS = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class Balances:
    """A user's credits as the ledger in Postgres has them, for rebuilding Redis's copy."""

    #: What is left of the allowance of the month asked about; -1: not reset in it.
    monthly: int
    purchased: int


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class Decision:
    """The outcome of one admission, with what the rate-limit headers report."""

    outcome: int
    day: int
    requests_limit: int
    requests_in_window: int
    #: Seconds until the oldest request in the window leaves it (room for one more).
    requests_reset: float
    images_limit: int
    images_used: int
    #: Seconds until the next UTC midnight, when the daily quota starts afresh.
    images_reset: int
    #: Decided in this process because Redis was unreachable (``redis.on_failure: open``).
    local: bool = False
    #: The reservation's slot in this process's journal (:data:`NO_SLOT`: none).
    ticket: int = NO_SLOT
    #: The admission's unique id (its member in the key's rolling-window log).
    member: str = ""
    #: Credits per image reserved (0: the plan has no credit limit, or images are free).
    price: int = 0
    #: The user's allowance left and purchased credits left, after the reservation
    #: (-1: the plan has no credit limit).
    monthly_credits: int = -1
    purchased_credits: int = -1
    #: Credits of the reservation taken from the purchased ones, and the month (since
    #: 1970-01) they were taken in: what a refund gives back to which balance.
    taken_purchased: int = 0
    month: int = -1
    #: The request or job id the credits were reserved for (the ledger's reference).
    reference: str = ""
    #: The label the reservation is counted under (model and planned backend).
    label: str = ""

    @property
    def requests_remaining(self) -> int:
        return max(0, self.requests_limit - self.requests_in_window)

    @property
    def images_remaining(self) -> int:
        return max(0, self.images_limit - self.images_used)

    @property
    def credits_remaining(self) -> int:
        """Credits left after the reservation; -1 when the plan has no credit limit."""
        if self.monthly_credits < 0:
            return -1
        return self.monthly_credits + self.purchased_credits


class SeedSource(Protocol):
    """Where a day's count comes from when Redis does not have it (Postgres)."""

    async def count_for(self, key_id: str, day: int) -> int: ...

    async def usage_for(self, key_id: str, day: int) -> list[tuple[str, int, int]]:
        """The day's ``(label, images, credits)`` by model and backend."""
        ...

    async def balances_for(self, user_id: str, month: int) -> Balances:
        """The user's balances from the credit ledger, for ``month`` (since 1970-01)."""
        ...


def usage_seed(rows: list[tuple[str, int, int]]) -> str:
    """A day's ``(label, images, credits)`` rows from Postgres as the scripts take them
    when they rebuild the day's usage by model and backend: JSON (``cjson`` in Redis's
    Lua), ``[]`` for none."""
    return json.dumps([list(row) for row in rows], separators=(",", ":"))
