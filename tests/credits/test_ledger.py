"""The credit ledger: append-only, each entry written once however often it is sent."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import pytest

from gateway.db.credits import LedgerEntry, write_entries
from tests.support.gateway import MakeKey


def _entry(user_id: Any, key_id: Any, i: int) -> LedgerEntry:
    return LedgerEntry(
        entry_id=f"test:{user_id}:{i}",
        user_id=str(user_id),
        api_key_id=str(key_id),
        kind="charge",
        amount=-1,
        monthly_delta=-1,
        purchased_delta=0,
        month=671,
        reference=None,
        reason=None,
        created_at=dt.datetime(2025, 12, 1, tzinfo=dt.UTC),
    )


async def test_a_batch_written_twice_appends_each_entry_once(make_key: MakeKey, db: Any):
    key = await make_key("pro")
    entries = [_entry(key.user_id, key.key_id, i) for i in range(600)]
    await write_entries(db, entries)
    await write_entries(db, [*entries[100:], _entry(key.user_id, key.key_id, 600)])
    count = await db.fetchval("SELECT count(*) FROM credit_ledger WHERE user_id = $1", key.user_id)
    assert count == 601
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("UPDATE credit_ledger SET amount = 5 WHERE user_id = $1", key.user_id)
