"""``GET /v1/credits`` and ``GET /v1/credits/ledger``: the caller's balances and ledger.

Either credential names the user: an API key (as the data plane uses) or an access
token (as the account plane does). A bearer credential that starts with the API key
prefix, or an ``X-API-Key`` header, is taken as a key.
"""

from __future__ import annotations

from aiohttp import web

from gateway import errors
from gateway.credits.balances import Credits
from gateway.db.credits import ledger_of_user
from gateway.db.pool import connection
from gateway.http.api_key_auth import authenticate
from gateway.http.responses import json_response
from gateway.http.schemas.credits import (
    DEFAULT_LEDGER_PAGE,
    MAX_LEDGER_PAGE,
    CreditLedger,
    CreditsBalance,
    LedgerEntry,
    MonthlyCredits,
    PurchasedCredits,
)
from gateway.http.token_auth import current_user
from gateway.services import SERVICES, Services

__all__ = ["balance_of", "read_credits", "read_ledger"]


async def _caller(request: web.Request, services: Services) -> tuple[str, int | None]:
    """The caller's user id and its plan's ``monthly_credits``; raises the 401/403."""
    prefix = services.config.keys.prefix
    scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
    if "X-API-Key" in request.headers or (
        scheme.lower() == "bearer" and credential.strip().startswith(prefix)
    ):
        record = await authenticate(request, services.keys, prefix, services.wall_clock())
        return record.user_id, record.monthly_credits
    user = await current_user(request, services)
    plan = (
        services.config.plans.get(user["plan"])
        or services.config.plans[services.config.default_plan]
    )
    return str(user["id"]), plan.monthly_credits


def balance_of(credits: Credits) -> CreditsBalance:
    return CreditsBalance(
        monthly=MonthlyCredits(
            balance=credits.monthly, allowance=credits.allowance, resets_at=credits.resets_at
        ),
        purchased=PurchasedCredits(balance=credits.purchased),
        total=credits.total,
    )


async def read_credits(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    user_id, allowance = await _caller(request, services)
    try:
        credits = await services.credits.read(user_id, allowance)
    except Exception as exc:
        raise errors.ServiceUnavailable("The balances cannot be read. Please retry.") from exc
    return json_response(balance_of(credits))


async def read_ledger(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    user_id, _ = await _caller(request, services)
    query = request.query
    limit = _whole(query.get("limit"), "limit", 1, MAX_LEDGER_PAGE) or DEFAULT_LEDGER_PAGE
    before = _whole(query.get("before"), "before", 1, 2**63 - 1)
    async with connection(services.pool) as conn:
        rows = await ledger_of_user(conn, user_id, before=before, limit=limit + 1)
    return json_response(
        CreditLedger(data=[LedgerEntry(**row) for row in rows[:limit]], has_more=len(rows) > limit)
    )


def _whole(raw: str | None, name: str, low: int, high: int) -> int | None:
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise errors.InvalidRequest(
            f"'{name}' must be a whole number from {low} to {high}.", param=name
        )
    return int(raw)
