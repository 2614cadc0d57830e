"""Queries on the credit ledger (``credit_ledger``, append-only)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.limits.decision import Balances

__all__ = [
    "LedgerEntry",
    "balances_of",
    "ledger_of_user",
    "write_entries",
]


#: Ledger rows per INSERT (a flush of a busy gateway holds thousands).
_ROWS_PER_STATEMENT = 250
#: However long a write may be spread over, its statements are never further apart.
_MAX_PAUSE_S = 0.015


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One balance change, as the Redis scripts record it."""

    entry_id: str
    user_id: str
    api_key_id: str | None
    kind: str
    amount: int
    monthly_delta: int
    purchased_delta: int
    month: int
    reference: str | None
    reason: str | None
    created_at: dt.datetime


async def write_entries(conn: Any, entries: Sequence[LedgerEntry], *, spread: float = 0.0) -> None:
    """Append ``entries``; one already written (the same ``entry_id``) is skipped, so a
    repeated or racing write of a batch appends each entry once. Entries of users
    deleted meanwhile are dropped; a deleted key's are kept without it.

    One transaction, in statements of :data:`_ROWS_PER_STATEMENT` rows spread over at
    most ``spread`` seconds (at most 15 ms apart), as usage counts are written: a
    ledger has a row per request, and one statement of thousands of rows would take a
    core from the requests in one burst.
    """
    if not entries:
        return
    statements = -(-len(entries) // _ROWS_PER_STATEMENT)
    pause = min(_MAX_PAUSE_S, spread / statements)
    async with conn.transaction():
        for start in range(0, len(entries), _ROWS_PER_STATEMENT):
            if start:
                await asyncio.sleep(pause)
            await _insert(conn, entries[start : start + _ROWS_PER_STATEMENT])


async def _insert(conn: Any, entries: Sequence[LedgerEntry]) -> None:
    await conn.execute(
        """
        INSERT INTO credit_ledger (entry_id, user_id, api_key_id, kind, amount, monthly_delta,
                                   purchased_delta, month, reference, reason, created_at)
        SELECT e.entry_id, e.user_id, k.id, e.kind, e.amount, e.monthly_delta,
               e.purchased_delta, e.month, e.reference, e.reason, e.created_at
        FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::bigint[],
                    $7::bigint[], $8::int[], $9::text[], $10::text[], $11::timestamptz[])
             WITH ORDINALITY
             AS e(entry_id, user_id, api_key_id, kind, amount, monthly_delta, purchased_delta,
                  month, reference, reason, created_at, position)
        JOIN users u ON u.id = e.user_id
        LEFT JOIN api_keys k ON k.id = e.api_key_id
        ORDER BY e.position
        ON CONFLICT (entry_id) DO NOTHING
        """,
        [e.entry_id for e in entries],
        [e.user_id for e in entries],
        [e.api_key_id for e in entries],
        [e.kind for e in entries],
        [e.amount for e in entries],
        [e.monthly_delta for e in entries],
        [e.purchased_delta for e in entries],
        [e.month for e in entries],
        [e.reference for e in entries],
        [e.reason for e in entries],
        [e.created_at for e in entries],
    )


async def balances_of(conn: Any, user_id: uuid.UUID | str, month: int) -> Balances:
    """The user's balances by the ledger: the purchased credits, and what is left of
    ``month``'s allowance (-1 when the ledger has no reset for that month)."""
    row = await conn.fetchrow(
        """
        SELECT COALESCE(SUM(purchased_delta), 0) AS purchased,
               COALESCE(bool_or(kind = 'monthly_reset' AND month = $2), false) AS was_reset,
               COALESCE(SUM(monthly_delta) FILTER (WHERE month = $2), 0) AS monthly
        FROM credit_ledger WHERE user_id = $1
        """,
        uuid.UUID(str(user_id)),
        month,
    )
    monthly = int(row["monthly"]) if row["was_reset"] else -1
    return Balances(monthly=monthly, purchased=int(row["purchased"]))


async def ledger_of_user(
    conn: Any, user_id: uuid.UUID | str, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """The user's entries, newest first, those with ``id < before`` when given."""
    rows = await conn.fetch(
        """
        SELECT id, kind, amount, monthly_delta, purchased_delta, api_key_id, reference,
               reason, created_at
        FROM credit_ledger
        WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2)
        ORDER BY id DESC
        LIMIT $3
        """,
        uuid.UUID(str(user_id)),
        before,
        limit,
    )
    return [dict(r) for r in rows]
