"""Write-behind of the live per-day image counters from Redis to Postgres.

Redis holds the truth (what quota decisions read); Postgres follows within about one
flush interval. The design never loses a count:

* Every admission marks its counter *pending* in the shard's set, inside the same
  script that counts, so a process killed right after admitting leaves a pending
  mark that any other process's flusher picks up.
* A flush writes absolute values ("key K used N images on day D"), read at a Redis
  timestamp; Postgres keeps the newest reading, so retried, duplicated or racing
  flushes cannot double count or go backwards.
* A pending mark is removed only after its row is committed, and only if the counter
  still holds the value written (compared inside a script), so nothing counted
  meanwhile slips through.
* A per-shard lease spreads the work: one process flushes a shard at a time.

The credit ledger follows the same rules: every balance change is appended, in the
script that makes it, to the shard's stream; a flush appends a batch of each stream to
``credit_ledger`` (each entry's stable id makes a repeated write a no-op) and only then
deletes those entries from the stream, by their ids, so racing flushers cannot lose one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from gateway.db.credits import SEPARATOR, balances_of, write_entries
from gateway.db.usage import (
    ModelUsage,
    count_for_day,
    date_of_day,
    usage_by_model_for_day,
    write_counts,
    write_usage_by_model,
)
from gateway.limits.admission import Admission
from gateway.limits.decision import Balances
from gateway.redis.layout import SHARDS, RedisLayout
from gateway.redis.lua import load_script
from gateway.tasks import raise_if_cancelled

__all__ = ["PostgresSeeds", "UsageFlusher"]

log = logging.getLogger(__name__)

_BATCH = 1000
#: Ledger entries read, written and deleted at a time, and at most per shard and flush.
_LEDGER_BATCH = 250
_LEDGER_PER_FLUSH = 4000
#: A flush's Postgres statements are spread over at most this share of the interval:
#: its work reaches Postgres in slices, not in one burst that takes a core from the
#: requests (see ``write_counts``).
_SPREAD_SHARE = 0.5


class PostgresSeeds:
    """Today's count from Postgres, for rebuilding a counter Redis no longer has."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def count_for(self, key_id: str, day: int) -> int:
        async with self._pool.acquire() as conn:
            return await count_for_day(conn, uuid.UUID(key_id), date_of_day(day))

    async def usage_for(self, key_id: str, day: int) -> list[tuple[str, int, int]]:
        async with self._pool.acquire() as conn:
            return await usage_by_model_for_day(conn, uuid.UUID(key_id), date_of_day(day))

    async def balances_for(self, user_id: str, month: int) -> Balances:
        async with self._pool.acquire() as conn:
            return await balances_of(conn, user_id, month)


@dataclass(slots=True)
class FlushStats:
    rows_written: int = 0
    rows_last_flush: int = 0
    ledger_entries_written: int = 0
    flushes: int = 0
    failures: int = 0
    last_success: float | None = None
    #: When the flusher was made (its clock): the lag counts from there until a flush.
    started: float = 0.0


class UsageFlusher:
    def __init__(
        self,
        *,
        redis: Redis,
        pool: Any,
        layout: RedisLayout,
        admission: Admission,
        interval: float,
        clock: Callable[[], float],
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        """``on_failure`` hears of every failed flush (for metrics)."""
        self._on_failure = on_failure or (lambda exc: None)
        self._pool = pool
        self._layout = layout
        self._admission = admission
        self._interval = interval
        self._clock = clock
        self._redis = redis
        self._collect = load_script(redis, "collect")
        self._ack = load_script(redis, "ack")
        self._token = secrets.token_hex(8)
        self._lease_ms = max(1000, int(interval * 5000))
        self._lock = asyncio.Lock()
        self.stats = FlushStats(started=clock())

    async def run(self) -> None:
        """Flush every interval until cancelled, backing off while Redis or Postgres fail."""
        delay = self._interval
        while True:
            # A cancellation redis-py absorbed during the last flush (it lets a read go
            # on) would otherwise be lost, and this loop would sleep on through shutdown.
            raise_if_cancelled()
            await asyncio.sleep(delay)
            try:
                more = await self.flush()
                delay = 0 if more else self._interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                self.stats.failures += 1
                self._on_failure(exc)
                delay = min(max(delay * 2, self._interval), 30.0)
                log.warning("usage flush failed (%s); retrying in %.1fs", exc, delay)

    async def flush(self) -> bool:
        """Write one batch per shard; True if some shard had more than a batch pending."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> bool:
        await self._admission.retry_unsent()
        try:
            await self._admission.settle_orphans()
        except Exception as exc:  # never in the way of writing the counts
            log.warning("settling stopped processes' journals failed (%s); will retry", exc)
        layout = self._layout
        # (key id, day) -> count. A key's counter is in its user's shard; one left in
        # another shard by a gateway from before the shard was the user's (a rolling
        # upgrade) would make two rows for one (key, day), which one statement cannot
        # write: the larger count is kept.
        counted: dict[tuple[str, int], int] = {}
        # (key id, day) -> [(label, images, credits), ...], with the count it was read with.
        by_model: dict[tuple[str, int], tuple[int, list[tuple[str, int, int]]]] = {}
        acks: dict[int, list[Any]] = {}
        read_at = 0.0
        more = False
        # One shard per round trip, not one pipeline for all: Redis runs a client's
        # pipelined scripts back to back, and admissions would wait behind them all.
        for shard in range(SHARDS):
            reply = await self._collect(
                keys=(layout.pending(shard), layout.lease(shard)),
                args=(
                    layout.counter_prefix(shard),
                    _BATCH,
                    self._token,
                    self._lease_ms,
                    layout.usage_prefix(shard),
                ),
            )
            if not reply:
                continue  # nothing pending, or another process holds the lease
            read_at = max(read_at, int(reply[0]) + int(reply[1]) / 1_000_000)
            read = reply[2:]  # member, value, usage by label, member, value, ...
            more = more or len(read) // 3 >= _BATCH
            shard_acks = acks[shard] = []
            for member, value, usage in zip(read[::3], read[1::3], read[2::3], strict=True):
                fields = _fields(usage)
                shard_acks += (member, value, fields.get("v", ""))
                count = int(value)
                if count < 0:
                    continue  # the counter is gone: nothing left to write
                key_id, _, day = member.decode().partition(":")
                slot = (key_id, int(day))
                if count > counted.get(slot, -1):
                    counted[slot] = count
                    if fields:
                        by_model[slot] = (count, _by_label(fields))
                    else:
                        by_model.pop(slot, None)

        key_ids = [key_id for key_id, _ in counted]
        if key_ids:
            days = [day for _, day in counted]
            counts = list(counted.values())
            counted_at = dt.datetime.fromtimestamp(read_at, dt.UTC)
            async with self._pool.acquire() as conn:
                await write_counts(
                    conn, key_ids, days, counts, counted_at, spread=self._interval * _SPREAD_SHARE
                )
                labelled: list[ModelUsage] = [
                    (key_id, day, label, images, credits)
                    for (key_id, day), (_, rows) in by_model.items()
                    for label, images, credits in rows
                ]
                if labelled:
                    async with conn.transaction():
                        await write_usage_by_model(conn, labelled, counted_at)
            self.stats.rows_written += len(key_ids)
        self.stats.rows_last_flush = len(key_ids)

        for shard, members in acks.items():  # a shard per round trip, as above
            await self._ack(
                keys=(layout.pending(shard), layout.lease(shard)),
                args=(
                    layout.counter_prefix(shard),
                    self._token,
                    layout.usage_prefix(shard),
                    *members,
                ),
            )
        more = await self._flush_ledger() or more
        self.stats.flushes += 1
        self.stats.last_success = self._clock()
        return more

    async def _flush_ledger(self) -> bool:
        """Append each shard's ledger stream to Postgres, a batch at a time, deleting each
        batch from its stream once written; True if a stream had more than a flush takes.

        Batches of :data:`_LEDGER_BATCH`: a busy gateway appends an entry per request,
        and reading, decoding and sending thousands at once would hold the event loop
        for tens of milliseconds; between batches requests are served.
        """
        layout = self._layout
        streams = [
            stream
            for shard in range(SHARDS)
            for stream in (layout.earlier_ledger(shard), layout.ledger(shard))
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
            lengths = await pipe.execute()
        more = False
        for stream, length in zip(streams, lengths, strict=True):
            if not length:
                continue
            left = min(int(length), _LEDGER_PER_FLUSH)
            more = more or int(length) > _LEDGER_PER_FLUSH
            while left > 0:
                batch = await self._redis.xrange(stream, count=min(_LEDGER_BATCH, left))
                reply = cast("list[Any]", batch)
                if not reply:
                    break
                entries = [_packed(fields) for _, fields in reply]
                async with self._pool.acquire() as conn:
                    await write_entries(conn, entries)
                # Everything up to the last entry read is in Postgres: trim it, one id
                # sent rather than one per entry (newer entries have greater ids).
                await self._redis.xtrim(stream, minid=_after(reply[-1][0]), approximate=False)
                self.stats.ledger_entries_written += len(entries)
                left -= len(reply)
        return more


def _fields(flat: list[bytes]) -> dict[str, str]:
    """A hash read as a flat list of fields and values (HGETALL inside a script)."""
    text = [item.decode() for item in flat]
    return dict(zip(text[::2], text[1::2], strict=True))


def _by_label(fields: dict[str, str]) -> list[tuple[str, int, int]]:
    """``(label, images, credits)`` of a day's usage hash (see admit.lua)."""
    return [
        (name[2:], int(value), int(fields.get("c:" + name[2:], "0")))
        for name, value in fields.items()
        if name.startswith("i:")
    ]


def _after(stream_id: bytes) -> str:
    """The smallest stream id greater than ``stream_id``."""
    millis, _, sequence = stream_id.decode().partition("-")
    return f"{millis}-{int(sequence) + 1}"


def _packed(fields: dict[bytes, bytes]) -> str:
    """A stream entry as :func:`~gateway.db.credits.write_entries` takes it: its one
    packed field ``e``, or the ten fields a gateway before it wrote, packed."""
    packed = fields.get(b"e")
    if packed is not None:
        return packed.decode()
    return SEPARATOR.join(
        (fields.get(name) or default).decode() for name, default in _EARLIER_FIELDS
    )


#: The fields of an entry of the earlier layout, in the packed order, with their defaults.
_EARLIER_FIELDS = (
    (b"k", b""), (b"i", b""), (b"u", b""), (b"key", b""), (b"a", b"0"), (b"md", b"0"),
    (b"pd", b"0"), (b"mo", b"0"), (b"r", b""), (b"t", b"0"), (b"why", b""),
)  # fmt: skip
