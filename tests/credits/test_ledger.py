"""The credit ledger: append-only, each entry written once however often it is sent."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest

from gateway.db.credits import SEPARATOR, write_entries
from tests.support.credits import CREDITS, grant
from tests.support.gateway import MakeGateway, MakeKey


def _entry(user_id: Any, key_id: Any, i: int) -> str:
    """A charge packed as the Redis scripts append it (ledger_entry.lua)."""
    fields = ("charge", f"test:{user_id}:{i}", str(user_id), str(key_id), "-1", "-1", "0",
              "671", "", "1764547200000000", "")  # fmt: skip
    return SEPARATOR.join(fields)


async def test_a_batch_written_twice_appends_each_entry_once(make_key: MakeKey, db: Any):
    key = await make_key("pro")
    entries = [_entry(key.user_id, key.key_id, i) for i in range(600)]
    await write_entries(db, entries)
    await write_entries(db, [*entries[100:], _entry(key.user_id, key.key_id, 600)])
    count = await db.fetchval("SELECT count(*) FROM credit_ledger WHERE user_id = $1", key.user_id)
    assert count == 601
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("UPDATE credit_ledger SET amount = 5 WHERE user_id = $1", key.user_id)


async def test_stream_entries_of_either_layout_reach_postgres_whole(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    """Entries wait in Redis packed in one field; one a gateway of the earlier layout
    (ten fields, in the stream it wrote to) left behind is still written, and a reason is
    kept whole."""
    gateway = await make_gateway(CREDITS)
    key = await make_key("metered")
    services = gateway.services
    shard = services.layout.shard_of(str(key.user_id))
    stream, earlier = services.layout.ledger(shard), services.layout.earlier_ledger(shard)
    await services.redis.xadd(
        earlier,
        {
            "k": "refund",
            "i": f"earlier:{key.user_id}",
            "u": str(key.user_id),
            "key": str(key.key_id),
            "a": 3,
            "md": 1,
            "pd": 2,
            "mo": 671,
            "r": "req-earlier",
            "t": 1764547200_000000,
        },
    )
    reason = "refund: a broken | image, sorry é"
    assert (await grant(gateway, key.user_id, 7, reason=reason)).status == 200
    assert (await gateway.generate(key.key, n=2, size="512x512")).status == 200
    assert await services.redis.xlen(stream) == 3  # the grant, the reset, the charge
    await gateway.flush()
    assert await services.redis.xlen(stream) == 0
    assert await services.redis.xlen(earlier) == 0
    rows = await db.fetch(
        """SELECT kind, api_key_id, amount, monthly_delta, purchased_delta, month, reference,
                  reason, created_at
           FROM credit_ledger WHERE user_id = $1 ORDER BY id""",
        key.user_id,
    )
    by_kind = {row["kind"]: dict(row) for row in rows}
    assert list(by_kind) == ["refund", "grant", "monthly_reset", "charge"]
    assert by_kind["refund"] == {
        "kind": "refund",
        "api_key_id": key.key_id,
        "amount": 3,
        "monthly_delta": 1,
        "purchased_delta": 2,
        "month": 671,
        "reference": "req-earlier",
        "reason": None,
        "created_at": dt.datetime(2025, 12, 1, tzinfo=dt.UTC),
    }
    assert by_kind["grant"]["reason"] == reason
    assert by_kind["grant"]["api_key_id"] is None
    assert (by_kind["grant"]["amount"], by_kind["grant"]["purchased_delta"]) == (7, 7)
    charge = by_kind["charge"]
    assert (charge["amount"], charge["monthly_delta"], charge["purchased_delta"]) == (-6, -6, 0)
    assert charge["api_key_id"] == key.key_id
    assert charge["reference"]


async def test_deleting_a_key_keeps_its_entries_and_deleting_a_user_removes_theirs(
    make_key: MakeKey, db: Any
):
    """The ledger is history: a key deleted (by hand, in SQL) leaves its entries naming it;
    a user deleted takes theirs along. Entries of a user deleted before they were
    written are dropped."""
    key = await make_key("pro")
    await write_entries(db, [_entry(key.user_id, key.key_id, i) for i in range(3)])
    await db.execute("DELETE FROM api_keys WHERE id = $1", key.key_id)
    rows = await db.fetch("SELECT api_key_id FROM credit_ledger WHERE user_id = $1", key.user_id)
    assert [row["api_key_id"] for row in rows] == [key.key_id] * 3
    await db.execute("DELETE FROM users WHERE id = $1", key.user_id)
    await write_entries(db, [_entry(key.user_id, key.key_id, 3)])
    assert (
        await db.fetchval("SELECT count(*) FROM credit_ledger WHERE user_id = $1", key.user_id) == 0
    )


async def test_a_reason_keeps_the_separator(make_key: MakeKey, db: Any):
    key = await make_key("pro")
    fields = ("grant", f"reason:{key.user_id}", str(key.user_id), "", "5", "0", "5", "671", "",
              "1764547200000000", "first\x1fsecond")  # fmt: skip
    await write_entries(db, [SEPARATOR.join(fields)])
    row = await db.fetchrow(
        "SELECT amount, reason FROM credit_ledger WHERE user_id = $1", key.user_id
    )
    assert (row["amount"], row["reason"]) == (5, "first\x1fsecond")


async def test_a_user_deleted_while_entries_are_written_waits_and_takes_them_along(
    make_key: MakeKey, db: Any, database_url: str
):
    """The flush's transaction locks the users it writes for: a DELETE of one of them
    waits for it, then its trigger removes the entries just written."""
    key = await make_key("pro")
    other = await asyncpg.connect(database_url)
    try:
        async with db.transaction():
            await write_entries(db, [_entry(key.user_id, key.key_id, i) for i in range(2)])
            deleting = asyncio.ensure_future(
                other.execute("DELETE FROM users WHERE id = $1", key.user_id)
            )
            other_pid = other.get_server_pid()
            while not deleting.done():  # until the DELETE waits on the flush's lock
                waiting = await db.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    other_pid,
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert not deleting.done()
        await deleting
    finally:
        await other.close()
    count = await db.fetchval("SELECT count(*) FROM credit_ledger WHERE user_id = $1", key.user_id)
    assert count == 0


async def test_an_earlier_entry_with_empty_or_missing_numbers_is_written_with_0(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    """As the earlier flusher read them: an empty or absent number counts as 0."""
    gateway = await make_gateway(CREDITS)
    key = await make_key("metered")
    services = gateway.services
    earlier = services.layout.earlier_ledger(services.layout.shard_of(str(key.user_id)))
    await services.redis.xadd(
        earlier,
        {"k": "grant", "i": f"sparse:{key.user_id}", "u": str(key.user_id), "a": 4, "md": "",
         "mo": 671, "t": 1764547200_000000},
    )  # fmt: skip
    await gateway.flush()

    row = await db.fetchrow(
        "SELECT amount, monthly_delta, purchased_delta, api_key_id, reference, reason"
        " FROM credit_ledger WHERE entry_id = $1",
        f"sparse:{key.user_id}",
    )
    assert row is not None
    assert dict(row) == {
        "amount": 4, "monthly_delta": 0, "purchased_delta": 0, "api_key_id": None,
        "reference": None, "reason": None,
    }  # fmt: skip
