"""Credits: a user's balances, its ledger, and an operator's change to them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from gateway.http.schemas.base import CONTROL_FREE, Instant, RequestBody

__all__ = [
    "DEFAULT_LEDGER_PAGE",
    "MAX_CREDIT_CHANGE",
    "MAX_LEDGER_PAGE",
    "CreditChange",
    "CreditLedger",
    "CreditsBalance",
    "LedgerEntry",
    "MonthlyCredits",
    "PurchasedCredits",
]

#: The most credits one operator's change may add or take away.
MAX_CREDIT_CHANGE = 10**9
DEFAULT_LEDGER_PAGE = 50
MAX_LEDGER_PAGE = 500


class CreditChange(RequestBody):
    """Purchased credits to add (positive) or take away (negative), and why."""

    amount: Annotated[int, Meta(ge=-MAX_CREDIT_CHANGE, le=MAX_CREDIT_CHANGE)]
    reason: Annotated[str, Meta(min_length=1, max_length=500, pattern=CONTROL_FREE)]

    messages: ClassVar[Mapping[str, str]] = {
        "amount": (
            f"'amount' must be a whole number from -{MAX_CREDIT_CHANGE} to"
            f" {MAX_CREDIT_CHANGE}, not 0."
        ),
        "reason": "'reason' must be 1 to 500 characters, without control characters.",
    }


class MonthlyCredits(msgspec.Struct):
    #: What is left of this month's allowance.
    balance: Annotated[int, Meta(ge=0)]
    #: The plan's monthly allowance; null: the plan has no credit limit.
    allowance: int | None
    #: When the next month's allowance replaces what is left of this one.
    resets_at: Instant


class PurchasedCredits(msgspec.Struct):
    balance: Annotated[int, Meta(ge=0)]


class CreditsBalance(msgspec.Struct):
    monthly: MonthlyCredits
    purchased: PurchasedCredits
    #: What requests may spend now (allowance left + purchased).
    total: Annotated[int, Meta(ge=0)]


class LedgerEntry(msgspec.Struct):
    id: int
    kind: Annotated[
        str,
        Meta(
            description="monthly_reset (`amount`: the allowance set), grant, charge,"
            " refund or adjust."
        ),
    ]
    #: The change of the total balance.
    amount: int
    #: The same change, by balance.
    monthly_delta: int
    purchased_delta: int
    created_at: Instant
    api_key_id: uuid.UUID | None = None
    #: The request or job id (charges and refunds).
    reference: str | None = None
    reason: str | None = None


class CreditLedger(msgspec.Struct):
    #: Newest first.
    data: list[LedgerEntry]
    #: More entries are older than the last: ask with ``before`` = its ``id``.
    has_more: bool
