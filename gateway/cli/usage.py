"""``gateway usage``: images per key over a range of UTC days, today's live counts too."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import (
    CliError,
    add_json,
    emit_json,
    parse_date,
    print_table,
    redis_client,
    run,
    utc_now,
)
from gateway.cli.users import find_user
from gateway.config import Config
from gateway.http.schemas.usage import MAX_DAYS
from gateway.redis.layout import RedisLayout
from gateway.usage.report import usage_by_key

__all__ = ["add_parsers"]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    usage = sub.add_parser(
        "usage", parents=[common], help="images per key over a range of days (default: today)"
    )
    usage.add_argument("--email", help="only this user's keys")
    usage.add_argument("--start", type=parse_date, help="the first UTC day, YYYY-MM-DD")
    usage.add_argument("--end", type=parse_date, help="the last UTC day (default: today)")
    add_json(usage)
    usage.set_defaults(handler=_usage)


def _usage(config: Config, args: argparse.Namespace) -> int:
    today = utc_now().date()
    end = args.end or max(today, args.start or today)
    start = args.start or min(end, today)
    if end < start:
        raise CliError("--end must not be before --start", 2)
    if (end - start).days + 1 > MAX_DAYS:
        raise CliError(f"the range may cover at most {MAX_DAYS} days", 2)

    async def work(conn: Any) -> int:
        user_id = (await find_user(conn, args.email))["id"] if args.email else None
        async with redis_client(config) as redis:
            rows = await usage_by_key(
                conn,
                redis,
                RedisLayout(config.redis.key_prefix),
                start,
                end,
                today=today,
                user_id=user_id,
            )
        total = sum(r["images"] for r in rows)
        if args.json:
            emit_json({"start": start, "end": end, "keys": rows, "total": total})
            return 0
        print(f"{start} to {end}: {total} images")
        if rows:
            print()
            print_table(
                ("EMAIL", "KEY ID", "IMAGES"),
                [(r["email"], r["api_key_id"], r["images"]) for r in rows],
            )
        return 0

    return run(config, work)
