"""What the commands share: a database connection, Redis, output as text or JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis

from gateway.config import Config
from gateway.keys.invalidation import invalidate_everywhere
from gateway.redis.client import create_redis

__all__ = [
    "ACTOR",
    "CliError",
    "Command",
    "add_json",
    "emit_json",
    "invalidator",
    "normalise_email",
    "parse_bool",
    "parse_date",
    "print_table",
    "run",
    "state_of_user",
    "utc_now",
]

#: Who the audit log says made a change from the command line.
ACTOR = "cli"

Command = Callable[[Config, argparse.Namespace], int]


class CliError(Exception):
    """Print ``error: <message>`` and exit with ``code`` (2: the command was wrong)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run(config: Config, work: Callable[[Any], Awaitable[int]]) -> int:
    """Run ``work(conn)`` with one Postgres connection."""

    async def go() -> int:
        conn = await asyncpg.connect(config.database.url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


@contextlib.asynccontextmanager
async def redis_client(config: Config) -> AsyncIterator[Redis]:
    redis = create_redis(config.redis)
    try:
        yield redis
    finally:
        await redis.aclose()


def invalidator(config: Config) -> Callable[[list[str]], Awaitable[None]]:
    """Forget keys in every running gateway (their limits or owner changed)."""

    async def invalidate(key_hashes: list[str]) -> None:
        async with redis_client(config) as redis:
            await invalidate_everywhere(redis, config.redis.key_prefix, key_hashes)

    return invalidate


def normalise_email(email: str) -> str:
    return email.strip().lower()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def parse_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date, YYYY-MM-DD") from None


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")


def emit_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; ``-`` for nothing."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for line in (list(headers), *cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def state_of_user(user: dict[str, Any]) -> str:
    return "active" if user["is_active"] else "disabled"
