"""Operators' changes of a user's purchased credits (the admin API and the CLI)."""

from __future__ import annotations

import logging
from typing import Any

from gateway import errors
from gateway.credits.balances import CHANGED, KEY_REUSED, TOO_FEW, CreditBook
from gateway.db.audit import record_admin_change
from gateway.db.pool import connection

__all__ = ["change_user_credits"]

log = logging.getLogger("gateway.admin")


async def change_user_credits(
    pool: Any,
    book: CreditBook,
    user_id: Any,
    amount: int,
    reason: str,
    idempotency_key: str,
    actor: str,
) -> bool:
    """Change the user's purchased credits once per key and audit it (also when a repeat
    finds the audit missing: the change went through but its audit did not); True for a
    repeat. Raises :class:`~gateway.errors.IdempotencyKeyReused` and the 400 for taking
    more than there is."""
    change = await book.change(str(user_id), amount, reason, idempotency_key)
    if change.status == KEY_REUSED:
        raise errors.IdempotencyKeyReused(
            "This Idempotency-Key was used for a different change of credits.",
            param="Idempotency-Key",
        )
    if change.status == TOO_FEW:
        raise errors.InvalidRequest(
            f"The user has {change.purchased} purchased credits: an adjustment cannot take"
            f" away {-amount}.",
            param="amount",
        )
    details = {
        "amount": amount,
        "reason": reason,
        "entry_id": change.entry_id,
        "purchased_after": change.purchased,
    }
    async with connection(pool) as conn, conn.transaction():
        if change.status == CHANGED or not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM admin_audit_log WHERE action = 'change_credits'"
            " AND target_id = $1 AND details->>'entry_id' = $2)",
            user_id,
            change.entry_id,
        ):
            await record_admin_change(
                conn, actor=actor, action="change_credits", target_id=user_id, details=details
            )
    log.warning(
        "credits changed: actor=%s user=%s amount=%d reason=%r%s",
        actor,
        user_id,
        amount,
        reason,
        " (a repeat)" if change.status != CHANGED else "",
    )
    return change.status != CHANGED
