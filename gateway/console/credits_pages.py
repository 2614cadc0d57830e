"""Credits in the console: a customer's balances and ledger, and an operator's grant.

The balances come from the credit book (:attr:`gateway.services.Services.credits`), the
ledger from :func:`gateway.db.credits.ledger_of_user`, as ``GET /v1/credits`` and
``/v1/credits/ledger`` read them; an operator's grant is
:func:`gateway.credits.changes.change_user_credits`, as ``POST /admin/users/{id}/credits``
makes it (audited, once per idempotency key). The grant form carries its own fresh key in
a hidden field, so a form sent twice (a double click, a reload) grants once.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.console.html import esc, field, hidden_csrf, html_page, when
from gateway.console.views import form_text, nav_of, require_session
from gateway.credits.balances import Credits
from gateway.credits.changes import change_user_credits
from gateway.db.credits import ledger_of_user
from gateway.db.pool import connection
from gateway.http.body import convert
from gateway.http.schemas.credits import MAX_CREDIT_CHANGE, CreditChange
from gateway.services import SERVICES, Services

__all__ = [
    "LEDGER_PAGE",
    "balances_list",
    "credits_page",
    "credits_section",
    "grant_credits",
    "read_balances",
]

LEDGER_PAGE = 25
#: The form's idempotency token, as :func:`credits_section` makes it.
_TOKEN = re.compile(r"[0-9a-f]{32}")
UNREADABLE = "The balances cannot be read just now. Please retry."


def _allowance_of(services: Services, plan_name: str) -> int | None:
    plan = services.config.plans.get(plan_name)
    return plan.monthly_credits if plan is not None else None


async def read_balances(services: Services, user: dict[str, Any]) -> Credits | None:
    """The user's balances now; None when the credit book cannot be read."""
    try:
        return await services.credits.read(str(user["id"]), _allowance_of(services, user["plan"]))
    except Exception:
        return None


def balances_list(credits: Credits | None) -> str:
    """The balances as a description list (or why they are missing)."""
    if credits is None:
        return f'<p class="error" role="alert">{esc(UNREADABLE)}</p>'
    left = (
        "no limit: the plan does not limit credits"
        if credits.allowance is None
        else f"{credits.monthly} of {credits.allowance}"
    )
    return (
        '<dl class="limits credits">'
        f'<dt>Total</dt><dd data-credits-total="{credits.total}">{credits.total}</dd>'
        f"<dt>Monthly allowance left</dt><dd>{esc(left)}</dd>"
        f"<dt>Allowance resets</dt><dd>{when(credits.resets_at)}</dd>"
        f"<dt>Purchased</dt><dd>{credits.purchased}</dd></dl>"
    )


def _ledger_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No ledger entries yet.</p>"
    lines = "".join(
        f'<tr><td data-label="When">{when(r["created_at"])}</td>'
        f'<td data-label="Kind">{esc(r["kind"])}</td>'
        f'<td data-label="Amount">{r["amount"]}</td>'
        f'<td data-label="Monthly">{r["monthly_delta"]}</td>'
        f'<td data-label="Purchased">{r["purchased_delta"]}</td>'
        f'<td data-label="Reference"><code>{esc(r["reference"] or "")}</code></td>'
        f'<td data-label="Reason">{esc(r["reason"] or "")}</td></tr>'
        for r in rows
    )
    return (
        '<div class="scroll"><table class="stack"><caption>Ledger, newest first</caption>'
        '<thead><tr><th scope="col">When</th><th scope="col">Kind</th>'
        '<th scope="col">Amount</th><th scope="col">Monthly</th><th scope="col">Purchased</th>'
        '<th scope="col">Reference</th><th scope="col">Reason</th></tr></thead>'
        f"<tbody>{lines}</tbody></table></div>"
    )


def _before(request: web.Request) -> int | None:
    text = request.query.get("before", "")
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 2**63 else None


async def credits_page(request: web.Request) -> web.StreamResponse:
    """The customer's balances and a page of the ledger (``?before=<id>`` for older)."""
    session = await require_session(request, customer=True)
    assert session.user is not None
    services: Services = request.config_dict[SERVICES]
    before = _before(request)
    credits = await read_balances(services, session.user)
    async with connection(services.pool) as conn:
        rows = await ledger_of_user(conn, session.user["id"], before=before, limit=LEDGER_PAGE + 1)
    pager = []
    if before is not None:
        pager.append('<a href="/console/credits">Newest entries</a>')
    if len(rows) > LEDGER_PAGE:
        pager.append(
            f'<a href="/console/credits?before={rows[LEDGER_PAGE - 1]["id"]}">Older entries</a>'
        )
    body = (
        balances_list(credits)
        + '<p class="hint">Requests spend the monthly allowance first, then purchased'
        " credits.</p>"
        + _ledger_table(rows[:LEDGER_PAGE])
        + (f'<nav class="pager" aria-label="Ledger pages">{"".join(pager)}</nav>' if pager else "")
    )
    return html_page("Credits", body, nav=nav_of(request, session), path="/console/credits")


async def credits_section(services: Services, user: dict[str, Any], csrf: str) -> str:
    """An operator's view of a user's credits, with the grant form (a fresh token)."""
    credits = await read_balances(services, user)
    action = f"/console/admin/users/{esc(user['id'])}/credits"
    return (
        f"<h2>Credits</h2>{balances_list(credits)}"
        f'<form method="post" action="{action}" class="card">{hidden_csrf(csrf)}'
        f'<input type="hidden" name="idempotency" value="{secrets.token_hex(16)}">'
        + field(
            "Credits to grant (negative to take away)",
            "amount",
            kind="number",
            extra=f' min="-{MAX_CREDIT_CHANGE}" max="{MAX_CREDIT_CHANGE}" step="1"',
        )
        + field("Reason", "reason", extra=' maxlength="500"')
        + '<button type="submit">Grant credits</button></form>'
    )


async def grant_credits(request: web.Request, user: dict[str, Any], actor: str) -> bool:
    """Change ``user``'s purchased credits as the form says, once per form; True for a
    repeat. Raises the 400 naming the field, and the credit book's refusals."""
    services: Services = request.config_dict[SERVICES]
    form = await request.post()
    token = form_text(form, "idempotency")
    if not _TOKEN.fullmatch(token):
        raise errors.InvalidRequest("The form is out of date: reload the page.")
    change = convert(
        {"amount": form_text(form, "amount").strip(), "reason": form_text(form, "reason")},
        CreditChange,
    )
    if change.amount == 0:
        raise errors.InvalidRequest(CreditChange.messages["amount"], param="amount")
    try:
        return await change_user_credits(
            services.pool,
            services.credits,
            uuid.UUID(str(user["id"])),
            change.amount,
            change.reason,
            f"console:{token}",
            actor,
        )
    except errors.GatewayError:
        raise
    except Exception as exc:
        raise errors.ServiceUnavailable("The credits could not be changed. Retry.") from exc
