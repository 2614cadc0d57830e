"""The billing events outbox (``billing_events``, filled by triggers: migration 0009)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

__all__ = ["claim_events", "forget_events", "postpone_events", "want_events"]


async def want_events(conn: Any, wanted: bool) -> None:
    """Whether usage and credit changes make events from now on (whoever writes them)."""
    await conn.execute("UPDATE billing_settings SET events_wanted = $1", wanted)


async def claim_events(
    conn: Any, *, limit: int, lease_seconds: float, now: dt.datetime
) -> list[Any]:
    """Up to ``limit`` due events, oldest first, leased to the caller for
    ``lease_seconds`` (another process takes them after that, if the caller died):
    rows of ``id, type, user_id, data, occurred_at, attempts``."""
    return list(
        await conn.fetch(
            """
            UPDATE billing_events e
               SET leased_until = $2::timestamptz + make_interval(secs => $3),
                   attempts = e.attempts + 1
             WHERE e.id IN (
                SELECT id FROM billing_events
                 WHERE due_at <= $2 AND (leased_until IS NULL OR leased_until <= $2)
                 ORDER BY id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
            RETURNING e.id, e.type, e.user_id, e.data::text AS data, e.occurred_at, e.attempts
            """,
            limit,
            now,
            lease_seconds,
        )
    )


async def forget_events(conn: Any, ids: Sequence[int]) -> None:
    """The receiver took these: they are sent."""
    await conn.execute("DELETE FROM billing_events WHERE id = ANY($1::bigint[])", list(ids))


async def postpone_events(conn: Any, ids: Sequence[int], due_at: dt.datetime) -> None:
    """The receiver did not take these: try again at ``due_at``."""
    await conn.execute(
        "UPDATE billing_events SET due_at = $2, leased_until = NULL WHERE id = ANY($1::bigint[])",
        list(ids),
        due_at,
    )
