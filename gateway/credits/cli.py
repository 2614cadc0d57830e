"""``gateway credits grant``: an operator's change of a user's credits from the shell."""

from __future__ import annotations

import sys
import time
import uuid

import asyncpg

from gateway import errors
from gateway.config import Config
from gateway.credits.balances import CreditBook
from gateway.credits.changes import change_user_credits
from gateway.db.users import find_user_by_email
from gateway.http.schemas.credits import MAX_CREDIT_CHANGE
from gateway.redis.client import create_redis
from gateway.redis.layout import RedisLayout
from gateway.usage.flusher import PostgresSeeds

__all__ = ["grant"]

ACTOR = "cli"


async def grant(
    config: Config, email: str, amount: int, reason: str, idempotency_key: str | None
) -> int:
    """Add ``amount`` purchased credits (take away, when negative) to the user with
    ``email``, audited as the CLI's; prints the balances after. The exit status."""
    if amount == 0 or abs(amount) > MAX_CREDIT_CHANGE:
        print(
            f"error: --amount must be from -{MAX_CREDIT_CHANGE} to {MAX_CREDIT_CHANGE}, not 0",
            file=sys.stderr,
        )
        return 2
    if not reason.strip():
        print("error: --reason must not be empty", file=sys.stderr)
        return 2
    pool = await asyncpg.create_pool(config.database.url, min_size=1, max_size=2)
    redis = create_redis(config.redis)
    try:
        async with pool.acquire() as conn:
            user = await find_user_by_email(conn, email.strip().lower())
        if user is None:
            print(f"error: no user with email {email!r}", file=sys.stderr)
            return 1
        book = CreditBook(
            redis,
            RedisLayout(config.redis.key_prefix),
            PostgresSeeds(pool),
            time.time,
            timeout=config.redis.socket_timeout_seconds,
        )
        key = idempotency_key or f"cli-{uuid.uuid4()}"
        try:
            repeated = await change_user_credits(pool, book, user["id"], amount, reason, key, ACTOR)
        except errors.GatewayError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        plan = config.plans.get(user["plan"])
        credits = await book.read(str(user["id"]), plan.monthly_credits if plan else None)
    finally:
        await redis.aclose()
        await pool.close()
    done = "already done (same --idempotency-key)" if repeated else f"{amount:+d} credits"
    print(
        f"{user['email']}: {done}; purchased {credits.purchased}, this month's allowance"
        f" left {credits.monthly}, total {credits.total}"
    )
    return 0
