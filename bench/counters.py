"""What the gateway asks of Redis and Postgres per request.

**Redis** — ``INFO commandstats`` before and after a timed run. Every top-level call is
one round trip (the gateway pipelines nothing on the request path), and each admission
is one ``EVALSHA``. Redis also counts the commands a script runs *inside* it in
commandstats (``ZADD``, ``INCRBY``, ...), so those are not round trips: round trips are
``EVALSHA`` calls, and the script-internal commands are reported apart.
Each script has a command only it runs, which splits the ``EVALSHA`` calls by script:
``ZCARD`` = admissions (``admit.lua``), ``SCARD`` = the usage flusher's ``collect.lua``,
``DEL`` = its ``ack.lua`` (releasing the flush lease), ``DECRBY`` = ``release.lua``; the
rest are key-cache lookups (``lookup.lua``: background refreshes of keys past
``keys.local_ttl_seconds``). Round trips *per request* leave out the flusher's scripts,
which run once per flush interval whatever the load (as its Postgres batches are
amortised below); the report shows them, and the all-in ``EVALSHA / requests``, too.
The requests are the ones the gateway admitted (one ``ZCARD`` each): wrk's count plus
the few still in flight when it stopped.

**Postgres** — ``pg_stat_statements`` when the server preloads it; otherwise
``pg_stat_database.xact_commit`` of the bench's private database, which only the
gateway uses (every statement outside a transaction block is a transaction of its
own). Those statistics reach the view late: a backend reports at most once a second,
and one that then goes idle reports up to 10 s later (Postgres 15). So a run is read
~1.5 s after it ends, PG-heavy phases (the first warm-up) end at least 11 s before a
run starts, and the usage flusher's expected share is subtracted: at most one batch per
``usage.flush_interval_seconds`` per process, each batch two transactions (the
``write_counts`` transaction, then the connection reset asyncpg's pool runs on release).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

__all__ = [
    "XACTS_PER_FLUSH",
    "PostgresCounter",
    "PostgresUsage",
    "RedisUsage",
    "redis_commandstats",
]

#: Commands the gateway's Lua scripts run (so counted in commandstats from inside).
SCRIPT_COMMANDS = frozenset(
    {
        "time", "get", "set", "zremrangebyscore", "zcard", "zadd", "pexpire", "incrby",
        "sadd", "zrange", "scard", "srandmember", "srem", "del", "decrby",
    }
)  # fmt: skip
#: Transactions per usage-flush batch: write_counts' own, and the pool's connection reset.
XACTS_PER_FLUSH = 2


def redis_commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command (lower case), from ``INFO commandstats``."""
    info: dict[str, Any] = client.info("commandstats")
    calls = {}
    for name, value in info.items():
        command = name.removeprefix("cmdstat_").lower()
        if isinstance(value, dict):
            calls[command] = int(value.get("calls", 0))
    return calls


@dataclass
class RedisUsage:
    requests: int
    delta: dict[str, int]

    @classmethod
    def between(cls, before: dict[str, int], after: dict[str, int], requests: int) -> RedisUsage:
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
        delta.pop("info", None)  # our own snapshots
        return cls(requests, {k: v for k, v in delta.items() if v})

    def add(self, other: RedisUsage) -> RedisUsage:
        keys = set(self.delta) | set(other.delta)
        merged = {k: self.delta.get(k, 0) + other.delta.get(k, 0) for k in keys}
        return RedisUsage(self.requests + other.requests, merged)

    def _get(self, name: str) -> int:
        return self.delta.get(name, 0)

    @property
    def evalsha(self) -> int:
        return self._get("evalsha") + self._get("eval")

    @property
    def admissions(self) -> int:
        return self._get("zcard")

    @property
    def flusher(self) -> int:
        return self._get("scard") + self._get("del")

    @property
    def releases(self) -> int:
        return self._get("decrby")

    @property
    def lookups(self) -> int:
        return max(0, self.evalsha - self.admissions - self.flusher - self.releases)

    @property
    def script_internal(self) -> int:
        return sum(v for k, v in self.delta.items() if k in SCRIPT_COMMANDS)

    @property
    def other_top_level(self) -> dict[str, int]:
        """Commands no script runs (so sent by a client), other than EVAL/EVALSHA."""
        skip = SCRIPT_COMMANDS | {"evalsha", "eval"}
        return {k: v for k, v in sorted(self.delta.items()) if k not in skip}

    def per_request(self, value: int) -> float:
        return value / self.requests if self.requests else float("nan")

    @property
    def request_path(self) -> int:
        """EVALSHA calls caused by requests: all but the flusher's per-interval ones."""
        return self.evalsha - self.flusher

    @property
    def round_trips_per_request(self) -> float:
        """Request-path round trips per request (the flusher's, like its Postgres
        batches, come once per interval whatever the load: reported apart)."""
        return self.per_request(self.request_path)


@dataclass
class PostgresUsage:
    requests: int
    #: Transactions (xact_commit method) or statements (pg_stat_statements) in the window.
    observed: int
    window_s: float
    #: What the usage flusher may account for in the window.
    allowance: int
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, other: PostgresUsage) -> PostgresUsage:
        return PostgresUsage(
            self.requests + other.requests,
            self.observed + other.observed,
            self.window_s + other.window_s,
            self.allowance + other.allowance,
            self.method,
            {
                "flush_batches_allowed": self.details.get("flush_batches_allowed", 0)
                + other.details.get("flush_batches_allowed", 0),
                "flushers": max(self.details.get("flushers", 0), other.details.get("flushers", 0)),
            },
        )

    @property
    def beyond_flusher(self) -> int:
        return max(0, self.observed - self.allowance)

    @property
    def per_request(self) -> float:
        return self.beyond_flusher / self.requests if self.requests else float("nan")

    @property
    def raw_per_request(self) -> float:
        return self.observed / self.requests if self.requests else float("nan")


class PostgresCounter:
    """Counts the bench database's work, from the server's ``postgres`` database."""

    def __init__(self, admin_url: str, database_url: str, database: str) -> None:
        self._admin_url = admin_url
        self._database_url = database_url
        self._database = database
        self.method = "xact_commit"
        self.why = ""

    def server_pid(self) -> int | None:
        """The Postgres server's process id when it runs on this machine (its backends
        are its children, so their CPU time can be read from /proc), else None."""
        with psycopg.connect(self._database_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        if not row:
            return None
        try:
            stat = Path(f"/proc/{row[0]}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            command = Path(f"/proc/{parent}/cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            return None  # another machine's (or another namespace's) server
        return parent if b"postgres" in command else None

    def prepare(self) -> None:
        """Use pg_stat_statements if the server preloads it (say why not otherwise)."""
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW shared_preload_libraries").fetchone()
            preload = str(row[0]) if row else ""
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
            ).fetchone()
        if "pg_stat_statements" not in preload:
            self.why = (
                "pg_stat_statements is "
                + ("installed" if available else "not installed")
                + " but not in shared_preload_libraries (setting it needs a server restart)"
            )
            return
        try:
            with psycopg.connect(self._database_url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
        except psycopg.Error as exc:
            self.why = f"pg_stat_statements unusable: {exc}".strip()
            return
        self.method = "pg_stat_statements"

    def snapshot(self) -> int:
        if self.method == "pg_stat_statements":
            with psycopg.connect(self._database_url, autocommit=True) as conn:
                row = conn.execute(
                    """
                    SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND query NOT LIKE '%pg_stat_statements%'
                    """
                ).fetchone()
            return int(row[0]) if row else 0
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                (self._database,),
            ).fetchone()
        return int(row[0]) if row else 0

    def usage(
        self,
        before: int,
        after: int,
        *,
        requests: int,
        window_s: float,
        processes: int,
        flush_interval: float,
    ) -> PostgresUsage:
        batches = processes * (math.ceil(window_s / flush_interval) + 1)
        # pg_stat_statements sees BEGIN, INSERT, UPDATE, COMMIT and the reset's four.
        per_batch = XACTS_PER_FLUSH if self.method == "xact_commit" else 8
        return PostgresUsage(
            requests=requests,
            observed=after - before,
            window_s=window_s,
            allowance=batches * per_batch,
            method=self.method,
            details={"flush_batches_allowed": batches, "flushers": processes},
        )
