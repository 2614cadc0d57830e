"""Credits in tests: a plan with an allowance, prices, and the ledger as Postgres has it."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

__all__ = ["CREDITS", "PRICES", "grant", "ledger_rows", "remaining"]

#: What an image costs in the credit tests: 256x256 1 credit, 512x512 3 credits.
PRICES = {"256x256": 1, "512x512": 3}

#: A plan "metered" with a monthly allowance of 10 credits, and those prices for "local".
CREDITS: dict[str, Any] = {
    "plans": {
        "metered": {
            "requests_per_minute": 100_000,
            "images_per_day": 100_000,
            "max_images_per_request": 4,
            "monthly_credits": 10,
        }
    },
    "pricing": {"models": {"local": {"credits_per_image": 1, "sizes": {"512x512": 3}}}},
}


async def ledger_rows(db: asyncpg.Connection, user_id: uuid.UUID) -> list[tuple[str, int]]:
    """The user's ledger, oldest first: ``(kind, amount)``."""
    rows = await db.fetch(
        "SELECT kind, amount FROM credit_ledger WHERE user_id = $1 ORDER BY id", user_id
    )
    return [(r["kind"], r["amount"]) for r in rows]


def remaining(response: Any) -> int:
    """The ``x-credits-remaining`` a response carries."""
    return int(response.headers["x-credits-remaining"])


async def grant(
    gateway: Any, user_id: uuid.UUID | str, amount: int, key: str | None = None, **body: Any
) -> Any:
    """``POST /admin/users/{id}/credits`` (a fresh Idempotency-Key unless given)."""
    from tests.support.config import ADMIN_TOKEN

    body = {"amount": amount, "reason": "a test", **body}
    headers = {
        "Authorization": f"Bearer {ADMIN_TOKEN}",
        "Idempotency-Key": key or uuid.uuid4().hex,
    }
    return await gateway.client.post(f"/admin/users/{user_id}/credits", json=body, headers=headers)
