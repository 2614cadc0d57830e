"""``gateway credits grant``: add (or take away) a user's purchased credits, audited."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg

from gateway.cli.common import ACTOR, CliError, add_json, emit_json, normalise_email, redis_client
from gateway.config import Config
from gateway.credits.balances import CreditBook
from gateway.credits.changes import change_user_credits
from gateway.db.users import find_user_by_email
from gateway.http.schemas.credits import MAX_CREDIT_CHANGE
from gateway.redis.layout import RedisLayout
from gateway.usage.flusher import PostgresSeeds

__all__ = ["add_parsers"]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    credits = sub.add_parser(
        "credits", parents=[common], help="manage users' credits"
    ).add_subparsers(dest="action", required=True)
    grant = credits.add_parser(
        "grant", parents=[common], help="add purchased credits to a user (negative: take away)"
    )
    grant.add_argument("--email", required=True, help="the user's email")
    grant.add_argument("--amount", required=True, type=int, help="credits (negative: take away)")
    grant.add_argument("--reason", required=True, help="why (kept in the ledger and audit log)")
    grant.add_argument(
        "--idempotency-key", help="a retry with the same key changes the credits once"
    )
    add_json(grant)
    grant.set_defaults(handler=_grant)


def _grant(config: Config, args: argparse.Namespace) -> int:
    amount: int = args.amount
    if amount == 0 or abs(amount) > MAX_CREDIT_CHANGE:
        raise CliError(
            f"--amount must be from -{MAX_CREDIT_CHANGE} to {MAX_CREDIT_CHANGE}, not 0", 2
        )
    if not args.reason.strip():
        raise CliError("--reason must not be empty", 2)
    return asyncio.run(_change(config, args, amount))


async def _change(config: Config, args: argparse.Namespace, amount: int) -> int:
    pool = await asyncpg.create_pool(config.database.url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            user = await find_user_by_email(conn, normalise_email(args.email))
        if user is None:
            raise CliError(f"no user with email {args.email!r}")
        async with redis_client(config) as redis:
            book = CreditBook(
                redis,
                RedisLayout(config.redis.key_prefix),
                PostgresSeeds(pool),
                time.time,
                timeout=config.redis.socket_timeout_seconds,
            )
            key = args.idempotency_key or f"cli-{uuid.uuid4()}"
            repeated = await change_user_credits(
                pool, book, user["id"], amount, args.reason, key, ACTOR
            )
            plan = config.plans.get(user["plan"])
            credits = await book.read(str(user["id"]), plan.monthly_credits if plan else None)
    finally:
        await pool.close()
    if args.json:
        emit_json(
            {
                "email": user["email"],
                "amount": amount,
                "repeated": repeated,
                "monthly": credits.monthly,
                "purchased": credits.purchased,
                "total": credits.total,
            }
        )
        return 0
    done = "already done (same --idempotency-key)" if repeated else f"{amount:+d} credits"
    print(
        f"{user['email']}: {done}; purchased {credits.purchased}, this month's allowance"
        f" left {credits.monthly}, total {credits.total}"
    )
    return 0
