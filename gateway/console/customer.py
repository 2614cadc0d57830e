"""A customer's console pages: keys, usage, playground, plan (credits and jobs: their own
modules).

Each runs the same core functions as the account API (:mod:`gateway.keys.issue`,
:mod:`gateway.db`); a new or rotated key is shown once, on the answer to the form that
made it, with ``Cache-Control: no-store``, and is kept nowhere in the browser.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.console.chart import daily_chart
from gateway.console.credits_pages import read_balances
from gateway.console.html import esc, field, hidden_csrf, html_page, post_button, when
from gateway.console.session import Session, csrf_token
from gateway.console.views import nav_of, notice_of, require_session, see_other
from gateway.credits.balances import Credits
from gateway.db import keys as db_keys
from gateway.db.pool import connection
from gateway.db.usage import usage_of_user
from gateway.http.accounts import today_images, utc_today
from gateway.http.schemas.keys import MAX_KEY_NAME
from gateway.http.validate import has_control_characters
from gateway.keys import issue
from gateway.services import SERVICES, Services

__all__ = [
    "create_key",
    "keys_page",
    "plan_page",
    "playground_page",
    "revoke_key",
    "rotate_key",
    "usage_page",
]

#: The grace periods a rotation offers, in seconds, with their names.
GRACE_CHOICES = ((0, "none: the old key stops now"), (3600, "1 hour"), (86400, "24 hours"))
CHART_DAYS = 30


def _key_state(row: dict[str, Any], now: dt.datetime) -> str:
    if not row["is_active"]:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


def _keys_body(request: web.Request, rows: list[dict[str, Any]], now: dt.datetime) -> str:
    csrf = csrf_token(request)
    create = (
        f'<form method="post" action="/console/keys" class="card">{hidden_csrf(csrf)}'
        f"{field('Key name', 'name', extra=f' maxlength={MAX_KEY_NAME}')}"
        f"{field('Expires on (optional)', 'expires_on', kind='date', required=False)}"
        '<button type="submit">Create key</button></form>'
    )
    if not rows:
        return create + "<p>You have no keys yet.</p>"
    lines = []
    for row in rows:
        state = _key_state(row, now)
        actions = ""
        if state == "active":
            options = "".join(f'<option value="{s}">{esc(t)}</option>' for s, t in GRACE_CHOICES)
            key_id = esc(row["id"])
            actions = (
                f'<form method="post" action="/console/keys/{key_id}/rotate" class="inline">'
                f'{hidden_csrf(csrf)}<label for="grace-{key_id}">Grace period</label>'
                f'<select id="grace-{key_id}" name="grace_seconds">{options}</select>'
                '<button type="submit">Rotate</button></form>'
                + post_button(f"/console/keys/{key_id}/revoke", "Revoke", csrf, style="danger")
            )
        lines.append(
            f'<tr data-key-prefix="{esc(row["prefix"])}">'
            f'<td data-label="Prefix"><code>{esc(row["prefix"])}</code></td>'
            f'<td data-label="Name">{esc(row["name"])}</td><td data-label="State">{state}</td>'
            f'<td data-label="Created">{when(row["created_at"])}</td>'
            f'<td data-label="Last used">{when(row["last_used_at"])}</td>'
            f'<td data-label="Expires">{when(row["expires_at"])}</td>'
            f'<td data-label="Actions" class="actions">{actions}</td></tr>'
        )
    table = (
        '<div class="scroll"><table class="stack"><caption>Your keys</caption><thead><tr>'
        '<th scope="col">Prefix</th><th scope="col">Name</th><th scope="col">State</th>'
        '<th scope="col">Created</th><th scope="col">Last used</th>'
        '<th scope="col">Expires</th><th scope="col">Actions</th></tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table></div>"
    )
    return create + table


def _now(services: Services) -> dt.datetime:
    return dt.datetime.fromtimestamp(services.wall_clock(), dt.UTC)


async def _keys_response(
    request: web.Request, session: Session, *, error: str = "", status: int = 200
) -> web.Response:
    services = request.config_dict[SERVICES]
    assert session.user is not None
    async with connection(services.pool) as conn:
        rows = await db_keys.keys_of_user(conn, session.user["id"])
    return html_page(
        "API keys",
        _keys_body(request, rows, _now(services)),
        nav=nav_of(request, session),
        path="/console/keys",
        notice=notice_of(request),
        error=error,
        status=status,
    )


async def keys_page(request: web.Request) -> web.StreamResponse:
    return await _keys_response(request, await require_session(request, customer=True))


def _shown_once(
    request: web.Request, session: Session, key: str, row: dict[str, Any], what: str
) -> web.Response:
    body = (
        f'<div class="card once"><p class="warning" role="alert">{esc(what)} Copy it now: '
        "this is the only time it is shown. It is not stored anywhere you can read it again."
        f'</p><p><label for="new-key">Your new key ({esc(row["name"])})</label>'
        f'<input id="new-key" class="secret" type="text" readonly value="{esc(key)}"></p>'
        '<p><button type="button" data-copy="new-key">Copy</button> '
        '<span class="copied" data-copied-for="new-key" role="status"></span></p>'
        '<p><a href="/console/keys">Back to your keys</a></p></div>'
    )
    return html_page(
        "Your new key", body, nav=nav_of(request, session), path="/console/keys", status=201
    )


async def create_key(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, customer=True)
    assert session.user is not None
    services = request.config_dict[SERVICES]
    form = await request.post()
    name = str(form.get("name", "")).strip()
    expires_on = str(form.get("expires_on", "")).strip()
    try:
        if not 1 <= len(name) <= MAX_KEY_NAME or has_control_characters(name):
            raise errors.InvalidRequest(f"The key's name must be 1 to {MAX_KEY_NAME} characters.")
        expires_at = None
        if expires_on:
            try:
                day = dt.date.fromisoformat(expires_on)
            except ValueError:
                raise errors.InvalidRequest("The expiry must be a date, YYYY-MM-DD.") from None
            if day <= utc_today(services):
                raise errors.InvalidRequest("The expiry must be a day after today.")
            expires_at = dt.datetime.combine(day, dt.time(), dt.UTC)
        async with connection(services.pool) as conn:
            key, row = await issue.issue_key_within_cap(
                conn,
                user_id=session.user["id"],
                prefix=services.config.keys.prefix,
                name=name,
                expires_at=expires_at,
                max_keys=services.config.auth.max_keys_per_user,
            )
    except errors.GatewayError as exc:
        return await _keys_response(request, session, error=exc.message, status=exc.status)
    return _shown_once(request, session, key, row, "Your key was created.")


def _key_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.NotFound("No such key.") from None


async def rotate_key(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, customer=True)
    assert session.user is not None
    services = request.config_dict[SERVICES]
    form = await request.post()
    grace = str(form.get("grace_seconds", "0"))
    allowed = {str(seconds): seconds for seconds, _ in GRACE_CHOICES}
    if grace not in allowed:
        return await _keys_response(request, session, error="Pick a grace period.", status=400)
    try:
        async with connection(services.pool) as conn, conn.transaction():
            key, row, old_hash = await issue.rotate_key(
                conn,
                key_id=_key_id(request),
                user_id=session.user["id"],
                prefix=services.config.keys.prefix,
                grace_seconds=allowed[grace],
                now=_now(services),
            )
    except errors.GatewayError as exc:
        return await _keys_response(request, session, error=exc.message, status=exc.status)
    await services.keys.invalidate([old_hash])
    what = "Your key was rotated." + (
        " The old key keeps working for the grace period." if allowed[grace] else ""
    )
    return _shown_once(request, session, key, row, what)


async def revoke_key(request: web.Request) -> web.StreamResponse:
    """The first press asks for confirmation; the confirmation's press revokes."""
    session = await require_session(request, customer=True)
    assert session.user is not None
    services = request.config_dict[SERVICES]
    key_id = _key_id(request)
    form = await request.post()
    async with connection(services.pool) as conn:
        own = {row["id"]: row for row in await db_keys.keys_of_user(conn, session.user["id"])}
        if key_id not in own:
            raise errors.NotFound("No such key.")
        if form.get("confirm") != "yes":
            row = own[key_id]
            confirm = {"confirm": "yes"}
            body = (
                f'<div class="card"><p>Revoke the key <code>{esc(row["prefix"])}</code> '
                f"({esc(row['name'])})? Every request made with it will be refused, at once. "
                "This cannot be undone.</p>"
                + post_button(
                    request.path, "Revoke", csrf_token(request), hidden=confirm, style="danger"
                )
                + ' <a href="/console/keys">Cancel</a></div>'
            )
            return html_page(
                "Revoke this key?", body, nav=nav_of(request, session), path="/console/keys"
            )
        key_hash = await db_keys.revoke_key(conn, key_id)
    if key_hash is not None:
        await services.keys.invalidate([key_hash])
    return see_other("/console/keys?done=revoked")


async def _daily_counts(
    services: Services, user_id: uuid.UUID, key_id: uuid.UUID | None, own: list[uuid.UUID]
) -> tuple[dict[dt.date, int], int]:
    """Images per day for the last ``CHART_DAYS`` days (today live), and today's total."""
    today = utc_today(services)
    start = today - dt.timedelta(days=CHART_DAYS - 1)
    counts: dict[dt.date, int] = {}
    async with connection(services.pool) as conn:
        for row in await usage_of_user(conn, user_id, start, today, key_id):
            counts[row["usage_date"]] = counts.get(row["usage_date"], 0) + row["image_count"]
        wanted = [key_id] if key_id is not None else own
        live = await today_images(services, conn, user_id, wanted)
    counts[today] = sum(live.values())
    return counts, counts[today]


async def usage_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, customer=True)
    assert session.user is not None
    services = request.config_dict[SERVICES]
    async with connection(services.pool) as conn:
        keys = await db_keys.keys_of_user(conn, session.user["id"])
    chosen = request.query.get("key", "")
    by_id = {str(k["id"]): k for k in keys}
    key_id = uuid.UUID(chosen) if chosen in by_id else None
    counts, today_total = await _daily_counts(
        services, session.user["id"], key_id, [k["id"] for k in keys]
    )
    plan = (
        services.config.plans.get(session.user["plan"])
        or services.config.plans[services.config.default_plan]
    )
    options = '<option value="">All keys</option>' + "".join(
        f'<option value="{esc(k["id"])}"{" selected" if str(k["id"]) == chosen else ""}>'
        f"{esc(k['name'])} ({esc(k['prefix'])})</option>"
        for k in keys
    )
    scope = f"key {by_id[chosen]['prefix']}" if key_id is not None else "all keys"
    body = (
        '<form method="get" action="/console/usage" class="inline-form">'
        f'<label for="f-key">Key</label><select id="f-key" name="key">{options}</select>'
        '<button type="submit">Show</button></form>'
        f'<p class="today" data-today="{today_total}">Today, {esc(scope)}: <strong>{today_total}'
        f"</strong> of {plan.images_per_day} images a day per key "
        f"({esc(session.user['plan'])} plan)</p>"
        f'<meter min="0" max="{plan.images_per_day}" '
        f'value="{min(today_total, plan.images_per_day)}"'
        f' aria-label="Today\'s images against the daily limit"></meter>'
        f"{daily_chart(counts, utc_today(services), CHART_DAYS)}"
        f'<p class="total">Last {CHART_DAYS} days, {esc(scope)}: '
        f"<strong>{sum(counts.values())}</strong> images.</p>"
        + _credits_line(await read_balances(services, session.user))
    )
    return html_page("Usage", body, nav=nav_of(request, session), path="/console/usage")


def _credits_line(credits: Credits | None) -> str:
    if credits is None:
        return ""
    return (
        f'<p class="credits">Credits left: <strong>{credits.total}</strong>'
        ' (<a href="/console/credits">balances and ledger</a>).</p>'
    )


async def playground_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, customer=True)
    services = request.config_dict[SERVICES]
    models = "".join(
        f'<option value="{esc(m)}"{" selected" if m == services.config.default_model else ""}>'
        f"{esc(m)}</option>"
        for m in services.router.models
    )
    sizes: list[str] = []
    for chain in services.router.models.values():
        sizes.extend(s for s in chain[0].backend.size_names if s not in sizes)
    size_options = "".join(f'<option value="{esc(s)}">{esc(s)}</option>' for s in sizes)
    body = (
        '<form id="playground" class="card" data-endpoint="/v1/images/generations">'
        '<p class="field"><label for="p-model">Model</label>'
        f'<select id="p-model" name="model">{models}</select></p>'
        '<p class="field"><label for="p-size">Size</label>'
        f'<select id="p-size" name="size">{size_options}</select></p>'
        '<p class="field"><label for="p-prompt">Prompt</label>'
        '<textarea id="p-prompt" name="prompt" rows="3" required maxlength="4000"></textarea></p>'
        '<p class="field"><label for="p-key">API key</label>'
        '<input id="p-key" name="key" type="password" autocomplete="off" required></p>'
        '<p class="hint">Paste one of your keys: keys are shown only once, so the console '
        "cannot fill it in. It is sent with this request only and kept nowhere.</p>"
        '<p class="check"><input id="p-job" name="job" type="checkbox">'
        '<label for="p-job">Run as a job</label></p>'
        '<p class="hint">A job runs in the background: this page follows it until it ends,'
        ' and the <a href="/console/jobs">Jobs</a> page lists it.</p>'
        '<button type="submit">Generate</button></form>'
        '<p id="p-status" role="status" class="status"></p>'
        '<div id="p-result" class="result"></div>'
        "<noscript>The playground needs JavaScript.</noscript>"
    )
    return html_page("Playground", body, nav=nav_of(request, session), path="/console/playground")


async def plan_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, customer=True)
    assert session.user is not None
    services = request.config_dict[SERVICES]
    name = session.user["plan"]
    plan = services.config.plans.get(name) or services.config.plans[services.config.default_plan]
    body = (
        f'<p>Your plan: <strong>{esc(name)}</strong></p><dl class="limits">'
        f"<dt>Requests per minute</dt><dd>{plan.requests_per_minute}</dd>"
        f"<dt>Images per day</dt><dd>{plan.images_per_day}</dd>"
        f"<dt>Images per request</dt><dd>{plan.max_images_per_request}</dd>"
        f"<dt>Active keys</dt><dd>{services.config.auth.max_keys_per_user}</dd></dl>"
        '<p class="hint">Limits apply to each key; an operator may set a key\'s own.</p>'
    )
    return html_page("Your plan", body, nav=nav_of(request, session), path="/console/plan")
