"""Queries on the credit ledger (``credit_ledger``, append-only)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from gateway.limits.decision import Balances

__all__ = [
    "SEPARATOR",
    "balances_of",
    "ledger_of_user",
    "write_entries",
]


#: Ledger rows per INSERT (a flush of a busy gateway holds thousands).
_ROWS_PER_STATEMENT = 250
#: However long a write may be spread over, its statements are never further apart.
_MAX_PAUSE_S = 0.015


#: Between the fields of a packed entry (``gateway/limits/scripts/ledger_entry.lua``).
SEPARATOR = "\x1f"


async def write_entries(conn: Any, entries: Sequence[str], *, spread: float = 0.0) -> None:
    """Append ``entries``, each packed as the Redis scripts append it to a shard's stream
    (``gateway/limits/scripts/ledger_entry.lua``: kind, entry id, user, key, amount,
    allowance part, purchased part, month, reference, microseconds since the epoch,
    reason, joined by ``\\x1f``). Postgres unpacks them: the flusher passes each stream
    entry through as it came, so a ledger row per request costs the gateway little more
    than reading it from Redis (splitting, converting and encoding eleven values per
    entry in Python took most of the 13 µs per entry the flusher spent; see
    BENCHMARKS.md, "Credits").

    An entry already written (the same entry id) is skipped, so a repeated or racing
    write of a batch appends each entry once. Entries of users deleted meanwhile are
    dropped, and the users written for are locked (``FOR KEY SHARE``, once each per
    statement) until the transaction ends, so a user deleted meanwhile waits for it and
    then takes the entries along (the trigger of migration 0011). A deleted key's entries
    keep its id (the ledger has no foreign keys).

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
            await conn.execute(_INSERT, entries[start : start + _ROWS_PER_STATEMENT])


_INSERT = """
WITH e AS MATERIALIZED (
    SELECT split.p, split.p[3]::uuid AS user_id, packed_entries.position
    FROM unnest($1::text[]) WITH ORDINALITY AS packed_entries(packed, position)
    CROSS JOIN LATERAL string_to_array(packed_entries.packed, chr(31)) AS split(p)
)
INSERT INTO credit_ledger (entry_id, user_id, api_key_id, kind, amount, monthly_delta,
                           purchased_delta, month, reference, reason, created_at)
SELECT e.p[2], e.user_id, nullif(e.p[4], '')::uuid, e.p[1], e.p[5]::bigint, e.p[6]::bigint,
       e.p[7]::bigint, e.p[8]::int, nullif(e.p[9], ''),
       nullif(array_to_string(e.p[11:], chr(31)), ''),
       'epoch'::timestamptz + e.p[10]::bigint * interval '1 microsecond'
FROM e
WHERE e.user_id IN (SELECT id FROM users WHERE id = ANY (ARRAY(SELECT user_id FROM e))
                    FOR KEY SHARE)
ORDER BY e.position
ON CONFLICT (entry_id) DO NOTHING
"""


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
