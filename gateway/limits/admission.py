"""Admission: the rate limit, the daily image quota and the usage reservation, in one step.

The limits are exact across any number of gateway processes because every check and
every update happens inside one Redis script (one round trip):

* **Rate limit** — a rolling window: no more than ``requests_per_minute`` requests are
  admitted in *any* 60 seconds (a sorted-set log of admission times per key, pruned
  as it goes; memory is O(limit) per key). There is no burst allowance beyond the limit
  and no doubling at window edges, unlike fixed windows.
* **Daily quota** — images per UTC day; a request for ``n`` images is admitted only if
  all ``n`` fit. A refused request changes nothing.
* **Credits** — when the key's plan has ``monthly_credits``: the user's allowance is set
  at the first admission of each UTC month, and a request is admitted only if the
  allowance and the purchased credits together cover ``n * price``, taken from the
  allowance first. Every change of a balance is also appended to the shard's ledger
  stream, which the usage flusher writes to Postgres (``credit_ledger``).
* **Reservation** — the ``n`` images (and their credits) are counted at admission;
  :meth:`Admission.release` gives back what the upstream did not deliver, and
  :meth:`Admission.delivered` closes the reservation. Each reservation is also written
  to this process's journal (:mod:`gateway.limits.journal`, shared memory, no round
  trip), so if the process dies before delivering, another process gives the images
  (and credits) back.

Redis keys share a hash tag per shard (``<prefix>{s<N>}:...``, the shard chosen from the
user, so a user's balances and all its keys' counters are together), so every script only
touches one hash slot and runs unchanged on a Redis Cluster. The shard also holds the
set of counters the usage flusher has not yet written to Postgres.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.credits.months import month_of_day
from gateway.keys.cache import KeyRecord
from gateway.limits.decision import (
    ADMITTED,
    NEEDS_CREDITS,
    NEEDS_SEED,
    Decision,
    SeedSource,
    usage_seed,
)
from gateway.limits.journal import NO_SLOT, Journal, Reservation, orphans
from gateway.redis.layout import RedisLayout
from gateway.redis.lua import load_script, script_source
from gateway.redis.pipelined import HotRedis, NotSent
from gateway.usage.labels import split_label, usage_label

if TYPE_CHECKING:
    from gateway.limits.local import LocalAdmission

__all__ = ["Admission", "Refund"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refund:
    """What to give back of one reservation (see ``release.lua``)."""

    user_id: str
    key_id: str
    day: int
    #: The admission's unique id: its once-only marker, and its ledger entries' ids.
    member: str
    images: int
    credits: int = 0
    #: At most this many of ``credits`` go back to the purchased ones.
    purchased: int = 0
    #: The month the credits were taken in (their allowance part lapses with it).
    month: int = -1
    #: The request or job id, for the ledger.
    reference: str = ""
    #: The label the images were counted under (model and backend).
    label: str = ""


class Admission:
    def __init__(
        self,
        redis: Redis,
        layout: RedisLayout,
        seeds: SeedSource,
        *,
        hot: HotRedis,
        clock: Callable[[], float] | None = None,
        fallback: LocalAdmission | None = None,
        timeout: float = 2.0,
        journal: Journal | None = None,
    ) -> None:
        """``hot`` sends the admission script (one pipelined connection, keeping its own
        timeout); ``redis`` the rest (releases, settlements), each within ``timeout``.

        ``clock`` (seconds since the epoch) replaces Redis's clock; for tests only.
        ``fallback`` decides instead while Redis is unreachable (``redis.on_failure:
        open``); without one, a Redis error propagates and the caller fails closed.
        ``journal`` (opened) records reservations in flight, for :meth:`settle_orphans`.
        """
        self._clock = clock
        self._fallback = fallback
        self._timeout = timeout
        self._layout = layout
        self._seeds = seeds
        self._journal = journal
        self._admit = hot.script(script_source("admit"))
        self._release = load_script(redis, "release")
        self._settle = load_script(redis, "settle")
        self._attribute = load_script(redis, "attribute")
        # Log members: unique across processes (the token) and within one (the counter).
        self._member_prefix = secrets.token_hex(6) + ":"
        self._sequence = itertools.count()
        #: Releases that could not reach Redis, retried by :meth:`retry_unsent`.
        self.unsent: collections.deque[Refund] = collections.deque()
        #: Journal slots of admissions whose reply never came (a Redis error or timeout):
        #: the script may have run, so they are settled like a dead process's.
        self.doubtful: collections.deque[int] = collections.deque()

    async def admit(
        self, record: KeyRecord, n: int, *, price: int = 0, reference: str = "", label: str = ""
    ) -> Decision:
        """Check the limits and, only if all pass, record the request and reserve ``n``
        images and, when the key's plan has ``monthly_credits``, ``n * price`` credits,
        counted in the day's usage under ``label`` (model and backend; see
        :mod:`gateway.usage.labels`).

        One Redis round trip, except on a key's first request of a UTC day after Redis
        lost its counter (or on a new day), when today's count is first read from
        Postgres, and likewise for a user's balances (rebuilt from the credit ledger).
        ``reference`` (the request or job id) goes into the ledger. Raises Redis errors
        as they come (the caller fails closed).
        """
        layout = self._layout
        key_id = record.key_id
        user_id = record.user_id
        tag = layout.tag(layout.shard_of(user_id))
        member = f"{self._member_prefix}{next(self._sequence):x}"
        now = "" if self._clock is None else int(self._clock() * 1_000_000)
        args: list[Any] = [
            record.requests_per_minute,
            record.images_per_day,
            n,
            member,
            key_id,
            "",
            "",
            now,
            label,
            "",
        ]
        allowance = record.monthly_credits
        credited = allowance is not None
        if allowance is not None:
            keys: tuple[str, ...] = (
                f"{tag}rl:{key_id}",
                f"{tag}img:{key_id}:",
                f"{tag}pending",
                f"{tag}use:{key_id}:",
                f"{tag}cr:{user_id}",
                f"{tag}ledger:e",  # layout.ledger(shard)
            )
            args += [allowance, price, user_id, reference, "", "", ""]
        else:
            keys = (
                f"{tag}rl:{key_id}",
                f"{tag}img:{key_id}:",
                f"{tag}pending",
                f"{tag}use:{key_id}:",
            )
            price = 0
        journal = self._journal
        ticket = (
            journal.begin(key_id, n, member, user_id, price, label)
            if journal is not None
            else NO_SLOT
        )
        # (A journal ignores NO_SLOT: a reservation it had no room for is not recorded.)
        try:
            raw = await self._admit(keys=keys, args=args)
            for _ in range(4):  # a counter, the balances, and a day turning between calls
                if raw[0] == NEEDS_SEED:
                    day = int(raw[1])
                    args[5] = await self._seeds.count_for(key_id, day)
                    args[6] = day
                    args[9] = usage_seed(await self._seeds.usage_for(key_id, day))
                elif raw[0] == NEEDS_CREDITS:
                    month = month_of_day(int(raw[1]))
                    balances = await self._seeds.balances_for(user_id, month)
                    args[14:17] = [month, balances.monthly, balances.purchased]
                else:
                    break
                raw = await self._admit(keys=keys, args=args)
            if raw[0] in (NEEDS_SEED, NEEDS_CREDITS):
                raise RedisError("the admission's counters could not be rebuilt")
        except BaseException as exc:
            if journal is not None:
                if isinstance(exc, NotSent):  # it never left this process
                    journal.end(ticket)
                elif ticket != NO_SLOT:
                    self.doubtful.append(ticket)
            if (
                self._fallback is None
                or credited  # balances cannot be kept without Redis: fail closed
                or not isinstance(exc, RedisError | TimeoutError)
            ):
                raise
            decision = await self._fallback.admit(record, n, label)
            return dataclasses.replace(decision, local=True, label=label)
        outcome, day, in_window, reset_us, used, to_midnight = (int(v) for v in raw[:6])
        decision = Decision(
            outcome=outcome,
            day=day,
            requests_limit=record.requests_per_minute,
            requests_in_window=in_window,
            requests_reset=reset_us / 1_000_000,
            images_limit=record.images_per_day,
            images_used=used,
            images_reset=to_midnight,
            member=member,
            label=label,
        )
        if credited:
            decision.price = price
            decision.monthly_credits = int(raw[6])
            decision.purchased_credits = int(raw[7])
            decision.taken_purchased = int(raw[8])
            decision.month = int(raw[9])
            decision.reference = reference
        if journal is not None:
            if outcome == ADMITTED:
                if credited:
                    journal.admitted(ticket, day, decision.taken_purchased, decision.month)
                else:
                    journal.admitted(ticket, day)
                decision.ticket = ticket
            else:
                journal.end(ticket)
        return decision

    def delivered(self, decision: Decision) -> None:
        """The reservation's images are being sent: it is settled, charged in full.

        Call it as late as possible: if the process dies after this, the images stay
        charged though the client may never see them.
        """
        if self._journal is not None:
            self._journal.end(decision.ticket)

    def undelivered(self, decision: Decision, images: int) -> None:
        """Only ``images`` of the reservation are not delivered yet (a stream sends its
        images one by one): a process killed now leaves just those to be given back.
        No round trip; settle with :meth:`release` when the stream ends."""
        if self._journal is not None:
            self._journal.shrink(decision.ticket, images)

    async def release(
        self, record: KeyRecord, decision: Decision, images: int, *, delivering: int = 0
    ) -> None:
        """Give back ``images`` of ``decision``'s reservation that were not delivered, and
        their credits.

        ``delivering`` images of it are still to be sent (call :meth:`delivered` then);
        with 0 the reservation is settled here. Never raises: when Redis cannot be
        reached the release is kept and retried by :meth:`retry_unsent` (the usage
        flusher calls it every interval).
        """
        journal = self._journal
        if journal is not None:
            # Before Redis hears of it: a process killed in between over-counts these
            # images; the other order could give them back twice.
            if delivering > 0:
                journal.shrink(decision.ticket, delivering)
            else:
                journal.end(decision.ticket)
        if images <= 0:
            return
        day = decision.day
        if decision.local and self._fallback is not None:
            self._fallback.release(record.user_id, record.key_id, day, images, decision.label)
            return
        refund = Refund(
            user_id=record.user_id,
            key_id=record.key_id,
            day=day,
            member=decision.member,
            images=images,
            credits=images * decision.price,
            purchased=decision.taken_purchased,
            month=decision.month,
            reference=decision.reference,
            label=decision.label,
        )
        try:
            await self._send_release(refund)
        except Exception as exc:
            log.warning(
                "could not release %d images of key %s (%s); will retry",
                images,
                record.key_id,
                exc,
            )
            self.unsent.append(refund)

    async def give_back(self, refund: Refund) -> bool:
        """Give back what ``refund`` says of a reservation, once only (the reservation's
        marker): False if it was given back before. Raises Redis errors; safe to call
        again after one. (Jobs settle through this, from any process: see
        :mod:`gateway.jobs.settlement`.)"""
        return await self._send_release(refund)

    async def attribute(
        self, record: KeyRecord, decision: Decision, backend: str, images: int
    ) -> None:
        """Count ``images`` delivered of ``decision``'s reservation under ``backend``
        when it is not the one they were admitted under (a fallback made them): one more
        round trip, on that path only. Never raises: the images stay charged either way;
        only the backend they are reported under would be wrong."""
        model, planned = split_label(decision.label)
        if images <= 0 or backend == planned or decision.local:
            return
        label = usage_label(model, backend)
        await self.attribute_usage(
            record.user_id,
            record.key_id,
            decision.day,
            decision.label,
            label,
            images,
            images * decision.price,
        )

    async def attribute_usage(
        self,
        user_id: str,
        key_id: str,
        day: int,
        counted: str,
        label: str,
        images: int,
        credits: int,
    ) -> None:
        """Move ``images`` (and ``credits``) of a day's usage from label ``counted`` to
        ``label`` (see ``attribute.lua``); logs instead of raising."""
        layout = self._layout
        try:
            async with asyncio.timeout(self._timeout):
                await self._attribute(
                    keys=(
                        layout.usage(user_id, key_id, day),
                        layout.pending(layout.shard_of(user_id)),
                    ),
                    args=(counted, label, images, credits, f"{key_id}:{day}"),
                )
        except Exception as exc:
            log.warning(
                "could not count %d images of key %s under %r (%s); they stay under %r",
                images,
                key_id,
                label,
                exc,
                counted,
            )

    async def _send_release(self, refund: Refund) -> bool:
        """Once only (the reservation's marker), so it is safe to send again."""
        layout = self._layout
        shard = layout.shard_of(refund.user_id)
        keys: tuple[str, ...] = (
            layout.counter(refund.user_id, refund.key_id, refund.day),
            layout.pending(shard),
            layout.settled(shard, refund.member),
            layout.usage(refund.user_id, refund.key_id, refund.day),
        )
        args: tuple[Any, ...] = (refund.images, f"{refund.key_id}:{refund.day}", refund.label)
        if refund.credits > 0:
            keys += (layout.credits(refund.user_id), layout.ledger(shard))
            args += (
                refund.credits,
                refund.purchased,
                refund.month,
                refund.user_id,
                refund.key_id,
                f"{refund.member}:r",
                refund.reference,
            )
        async with asyncio.timeout(self._timeout):
            left = await self._release(keys=keys, args=args)
        return int(left) != -2

    async def retry_unsent(self) -> None:
        """Send what could not reach Redis earlier: releases, counts admitted locally, and
        admissions whose reply never came.

        Raises (keeping the rest) if Redis still fails.
        """
        if self._fallback is not None and self._fallback.unsynced:
            await self._fallback.reconcile()
        while self.unsent:
            await self._send_release(self.unsent[0])
            self.unsent.popleft()
        journal = self._journal
        while self.doubtful and journal is not None:
            ticket = self.doubtful[0]
            await self.settle(journal.entry(ticket))
            self.doubtful.popleft()
            journal.end(ticket)

    async def settle(self, reservation: Reservation) -> int:
        """Give back a reservation that was never delivered; the images given back.

        Safe to repeat, from any process: only the first call counts.
        """
        layout = self._layout
        shard = layout.shard_of(reservation.user_id)
        tag = layout.tag(shard)
        key_id = reservation.key_id
        keys: tuple[str, ...] = (
            f"{tag}rl:{key_id}",
            f"{tag}img:{key_id}:",
            f"{tag}pending",
            layout.settled(shard, reservation.member),
            f"{tag}use:{key_id}:",
        )
        args: tuple[Any, ...] = (
            reservation.images,
            reservation.member,
            key_id,
            reservation.day,
            reservation.label,
        )
        if reservation.price > 0:
            keys += (layout.credits(reservation.user_id), layout.ledger(shard))
            args += (
                reservation.price,
                reservation.purchased,
                reservation.month,
                reservation.user_id,
            )
        async with asyncio.timeout(self._timeout):
            given_back = await self._settle(keys=keys, args=args)
        return int(given_back)

    async def settle_orphans(self) -> int:
        """Settle the journals of dead processes; the images given back.

        Raises (leaving the journal being settled for the next attempt) if Redis cannot
        be reached. A journal that cannot be settled for another reason (unreadable,
        corrupt, refused by Redis) is set aside as ``*.bad``, logged, and skipped.
        """
        journal = self._journal
        if journal is None:
            return 0
        total = 0
        for orphan in orphans(journal.directory, journal.path):
            given_back = 0
            try:
                for reservation in orphan.reservations:
                    given_back += await self.settle(reservation)
            except (RedisConnectionError, RedisTimeoutError, TimeoutError):
                orphan.keep()
                raise
            except Exception:
                log.exception("could not settle the journal %s; set aside", orphan.path.name)
                orphan.set_aside()
                continue
            except BaseException:
                orphan.keep()
                raise
            orphan.discard()
            if orphan.reservations:
                log.info(
                    "settled %d reservations of a stopped process (%s): %d images given back",
                    len(orphan.reservations),
                    orphan.path.name,
                    given_back,
                )
            total += given_back
        return total
