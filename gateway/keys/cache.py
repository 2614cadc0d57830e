"""The layered key cache: this process, then Redis, then Postgres.

What it promises:

* A key seen recently is answered from process memory with no I/O. Past its
  freshness TTL it is still answered at once while one background task refreshes it,
  so a busy key never pays a lookup on the request path.
* Unknown keys are cached too ("negative" entries), in process and in Redis, so a
  flood of made-up keys reaches Postgres at most once per distinct key.
* Concurrent misses for one key in one process share a single lookup.
* :meth:`KeyCache.invalidate` removes a key from Redis and tells every process
  (Redis pub/sub) to drop its copy; the TTLs are only a backstop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.config import KeysConfig, PlanConfig
from gateway.db.keys import KeyRow, fetch_key_by_hash
from gateway.redis.channels import publish, subscribed
from gateway.redis.layout import key_entry, key_invalidation_channel
from gateway.redis.lua import script_source
from gateway.redis.pipelined import HotRedis
from gateway.tasks import raise_if_cancelled

__all__ = [
    "SECOND_INVALIDATION_DELAY",
    "TTL_JITTER",
    "KeyCache",
    "KeyRecord",
    "KeyStore",
    "PostgresKeyStore",
    "publish_invalidation",
]

log = logging.getLogger(__name__)

_MISSING = b"-"
#: How long past its freshness a record may still be served while it is refreshed.
_STALE_GRACE_SECONDS = 60.0
#: How long one process may hold the right to load a missing key from Postgres,
#: and how the others wait for its answer (about 1 s in all) before loading it too.
_LOAD_LOCK_MS = 2000
_LOAD_WAITS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.4)
_HIT, _LOADING = 1, 2
#: Each copy's lifetime (in this process, and in Redis) is cut by up to this share, at
#: random. Keys loaded together (a warm-up, a deploy, a burst of new clients) would
#: otherwise all go stale together, hundreds of times a second, every TTL: a refresh
#: storm that takes the process's core from the requests it serves.
TTL_JITTER = 0.2
#: Invalidation is repeated once after this delay, to beat a lookup that read the
#: old row just before the change and wrote it back into Redis just after.
SECOND_INVALIDATION_DELAY = 1.0


class KeyRecord:
    """A key as the hot path sees it, with its limits already resolved from its plan."""

    __slots__ = (
        "expires_at",
        "fresh_until",
        "images_per_day",
        "key_active",
        "key_id",
        "max_images_per_request",
        "monthly_credits",
        "plan",
        "requests_per_minute",
        "user_active",
        "user_id",
    )

    def __init__(
        self,
        *,
        key_id: str,
        user_id: str,
        plan: str,
        key_active: bool,
        user_active: bool,
        expires_at: float | None,
        requests_per_minute: int,
        images_per_day: int,
        max_images_per_request: int,
        monthly_credits: int | None = None,
    ) -> None:
        self.key_id = key_id
        self.user_id = user_id
        self.plan = plan
        self.key_active = key_active
        self.user_active = user_active
        self.expires_at = expires_at
        self.requests_per_minute = requests_per_minute
        self.images_per_day = images_per_day
        self.max_images_per_request = max_images_per_request
        #: The plan's monthly credit allowance; None: no credit limit.
        self.monthly_credits = monthly_credits
        #: Until when (monotonic clock) this process may use it without asking Redis.
        self.fresh_until = 0.0


class KeyStore(Protocol):
    """Where keys really live."""

    async def fetch(self, key_hash: str) -> KeyRow | None: ...


class PostgresKeyStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def fetch(self, key_hash: str) -> KeyRow | None:
        async with self._pool.acquire() as conn:
            return await fetch_key_by_hash(conn, key_hash)


def _encode(row: KeyRow | None) -> bytes:
    if row is None:
        return _MISSING
    expires = row.expires_at.timestamp() if row.expires_at is not None else None
    return orjson.dumps(
        [
            str(row.key_id),
            str(row.user_id),
            row.plan,
            row.key_active,
            row.user_active,
            expires,
            row.requests_per_minute,
            row.images_per_day,
        ]
    )


class KeyCache:
    def __init__(
        self,
        *,
        redis: Redis,
        store: KeyStore,
        config: KeysConfig,
        plans: Mapping[str, PlanConfig],
        default_plan: str,
        redis_prefix: str,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[str, str], None] | None = None,
        lookups: HotRedis,
        timeout: float = 2.0,
    ) -> None:
        """``on_lookup(layer, result)`` is told which layer answered each lookup
        (``process``, ``redis`` or ``postgres``) and whether the key existed
        (``hit``) or not (``negative``). ``lookups``, the hot path's pipelined
        connection, carries the lookup script (refreshes included): a few microseconds
        a call, against a hundred or so through a redis-py pool; ``redis`` the rest."""
        self._on_lookup = on_lookup or (lambda layer, result: None)
        self._timeout = timeout
        self._redis = redis
        self._store = store
        self._config = config
        self._plans = plans
        self._default_plan = default_plan
        self._redis_prefix = redis_prefix
        self.channel = key_invalidation_channel(redis_prefix)
        self._clock = clock
        # Keyed by the 32-byte digest (half the size of its hex form); insertion order is
        # age, so the oldest entry goes first when the cache is full. Known keys and
        # "no such key" are kept apart, the latter with just its expiry.
        self._local: dict[bytes, KeyRecord] = {}
        self._missing: dict[bytes, float] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._epoch = 0
        self._lookup_script = lookups.script(script_source("lookup", package="gateway.keys"))
        self.subscribed = asyncio.Event()

    # -- lookups ---------------------------------------------------------------

    def cached(self, digest: bytes) -> KeyRecord | None:
        """The record of the key with this SHA-256 ``digest`` if this process holds it
        fresh; no I/O, no refresh.

        The hot path's first look: a hit here needs nothing else (see :meth:`get`).
        """
        record = self._local.get(digest)
        if record is not None and self._clock() < record.fresh_until:
            self._on_lookup("process", "hit")
            return record
        return None

    async def get(self, key_hash: str) -> KeyRecord | None:
        """The key's record, or ``None`` if no such key exists.

        Raises whatever Redis or Postgres raise when neither can answer.
        """
        digest = bytes.fromhex(key_hash)
        record = self.cached(digest)
        if record is not None:
            return record
        record = self._local.get(digest)
        if record is not None:
            if self._clock() < record.fresh_until + _STALE_GRACE_SECONDS:
                if key_hash not in self._inflight:
                    self._spawn(self._lookup(key_hash))
                self._on_lookup("process", "hit")
                return record
        else:
            missing_until = self._missing.get(digest)
            if missing_until is not None and self._clock() < missing_until:
                self._on_lookup("process", "negative")
                return None
        return await self._lookup(key_hash)

    def _lookup(self, key_hash: str) -> asyncio.Future[KeyRecord | None]:
        future = self._inflight.get(key_hash)
        if future is None:
            future = asyncio.ensure_future(self._load(key_hash))
            self._inflight[key_hash] = future
            future.add_done_callback(lambda _: self._inflight.pop(key_hash, None))
        return future

    async def _load(self, key_hash: str) -> KeyRecord | None:
        epoch = self._epoch
        raw = await self._load_raw(key_hash)
        record = self._decode(raw)
        now = self._clock()
        if epoch != self._epoch:
            fresh = now  # an invalidation raced this lookup: use it once, then look again
        elif record is None:
            fresh = now + self._config.negative_ttl_seconds
        else:
            fresh = now + _jittered(self._config.local_ttl_seconds)
        self._remember(key_hash, record, fresh)
        return record

    async def _load_raw(self, key_hash: str) -> bytes:
        """The record from Redis; on a miss, one caller across all processes loads it."""
        entry = key_entry(self._redis_prefix, key_hash)
        lock = f"{entry}:loading"  # same hash slot as the entry
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._lookup_script(keys=(entry, lock), args=(_LOAD_LOCK_MS,))
        except (RedisError, TimeoutError):
            # Redis is down: ask Postgres directly (and cache nothing in Redis).
            row = await self._store.fetch(key_hash)
            self._on_lookup("postgres", "negative" if row is None else "hit")
            return _encode(row)
        if reply[0] == _HIT:
            raw = cast(bytes, reply[1])
            self._on_lookup("redis", "negative" if raw == _MISSING else "hit")
            return raw
        if reply[0] == _LOADING:
            # Another process is reading Postgres: wait for its answer to land in Redis.
            for delay in _LOAD_WAITS:
                await asyncio.sleep(delay)
                loaded = cast("bytes | None", await self._redis.get(entry))
                if loaded is not None:
                    return loaded
            # It took too long (or died): read Postgres ourselves.
        row = await self._store.fetch(key_hash)
        self._on_lookup("postgres", "negative" if row is None else "hit")
        raw = _encode(row)
        ttl_ms = int(_jittered(self._config.redis_ttl_seconds) * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(entry, raw, px=ttl_ms)
            pipe.delete(lock)
            await pipe.execute()
        return raw

    def _decode(self, raw: bytes) -> KeyRecord | None:
        if raw == _MISSING:
            return None
        key_id, user_id, plan_name, key_active, user_active, expires, rpm, ipd = orjson.loads(raw)
        plan = self._plans.get(plan_name)
        if plan is None:
            log.warning(
                "key %s has plan %r, which is not configured: using the default plan",
                key_id,
                plan_name,
            )
            plan = self._plans[self._default_plan]
        return KeyRecord(
            key_id=key_id,
            user_id=sys.intern(user_id),  # one copy for all of a user's keys
            plan=sys.intern(plan_name),
            key_active=key_active,
            user_active=user_active,
            expires_at=expires,
            requests_per_minute=rpm if rpm is not None else plan.requests_per_minute,
            images_per_day=ipd if ipd is not None else plan.images_per_day,
            max_images_per_request=plan.max_images_per_request,
            monthly_credits=plan.monthly_credits,
        )

    def _remember(self, key_hash: str, record: KeyRecord | None, fresh: float) -> None:
        digest = bytes.fromhex(key_hash)
        self._local.pop(digest, None)
        self._missing.pop(digest, None)
        if record is None:
            table: dict[bytes, Any] = self._missing
            value: Any = fresh
        else:
            record.fresh_until = fresh
            table, value = self._local, record
        if len(table) >= self._config.local_max_entries:
            del table[next(iter(table))]
        table[digest] = value

    # -- invalidation ----------------------------------------------------------

    async def invalidate(self, key_hashes: Iterable[str]) -> None:
        """Forget these keys everywhere: Redis and every process's memory."""
        hashes = list(key_hashes)
        if not hashes:
            return
        await self._broadcast_invalidation(hashes)
        self._spawn(self._invalidate_again(hashes))

    async def _broadcast_invalidation(self, hashes: list[str]) -> None:
        await publish_invalidation(self._redis, self._redis_prefix, hashes)
        self.drop_local(hashes)

    async def _invalidate_again(self, hashes: list[str]) -> None:
        await asyncio.sleep(SECOND_INVALIDATION_DELAY)
        try:
            await self._broadcast_invalidation(hashes)
        except Exception:  # the TTL remains the backstop
            log.warning("second key invalidation failed", exc_info=True)

    def use_plans(self, plans: Mapping[str, PlanConfig], default_plan: str) -> None:
        """Resolve limits from these plans from now on (a config reload): every record
        this process holds is dropped, and a lookup in flight is used once only."""
        self._plans, self._default_plan = plans, default_plan
        self._epoch += 1
        self._local.clear()
        self._missing.clear()

    def drop_local(self, hashes: Iterable[str]) -> None:
        self._epoch += 1
        for key_hash in hashes:
            digest = bytes.fromhex(key_hash)
            self._local.pop(digest, None)
            self._missing.pop(digest, None)

    async def listen_for_invalidations(self) -> None:
        """Run forever: drop local copies of keys that any process invalidates."""
        backoff = 0.1
        while True:
            try:
                async with subscribed(self._redis, self.channel) as next_message:
                    # Whatever changed while we were not listening is unknown: start afresh.
                    self._epoch += 1
                    self._local.clear()
                    self._missing.clear()
                    self.subscribed.set()
                    backoff = 0.1
                    while True:
                        data = await next_message(1.0)
                        raise_if_cancelled()
                        if data is not None:
                            self.drop_local(data.decode("ascii").split())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                self.subscribed.clear()
                log.warning("key invalidation channel lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    # -- housekeeping ----------------------------------------------------------

    def _spawn(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background key refresh failed: %s", task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def holds(self, key_hash: str) -> bool:
        """Whether this process has its own copy of the key (or of its absence)."""
        digest = bytes.fromhex(key_hash)
        return digest in self._local or digest in self._missing

    def __len__(self) -> int:
        return len(self._local) + len(self._missing)


def _jittered(ttl: float) -> float:
    """``ttl`` less up to :data:`TTL_JITTER` of it, at random: never longer."""
    return ttl * (1.0 - TTL_JITTER * random.random())


async def publish_invalidation(redis: Redis, redis_prefix: str, key_hashes: list[str]) -> None:
    """Delete the keys' Redis entries and tell every process to drop its copy."""
    async with redis.pipeline(transaction=False) as pipe:
        for key_hash in key_hashes:  # one DEL each: the entries live in different slots
            pipe.delete(key_entry(redis_prefix, key_hash))
        publish(pipe, key_invalidation_channel(redis_prefix), " ".join(key_hashes))
        await pipe.execute()
