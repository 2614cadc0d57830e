"""What an admission decides: the outcome codes, :class:`Decision` and where seeds come from.

Shared by the Redis admission (:mod:`gateway.limits.admission`) and the local fallback
(:mod:`gateway.limits.local`), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.limits.journal import NO_SLOT

__all__ = ["ADMITTED", "NEEDS_SEED", "OVER_QUOTA", "RATE_LIMITED", "Decision", "SeedSource"]

NEEDS_SEED, ADMITTED, RATE_LIMITED, OVER_QUOTA = 0, 1, 2, 3


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

    @property
    def requests_remaining(self) -> int:
        return max(0, self.requests_limit - self.requests_in_window)

    @property
    def images_remaining(self) -> int:
        return max(0, self.images_limit - self.images_used)


class SeedSource(Protocol):
    """Where a day's count comes from when Redis does not have it (Postgres)."""

    async def count_for(self, key_id: str, day: int) -> int: ...
