"""The operator's console pages: users (search, page, one user), usage, the audit log.

Changes go the admin API's way: one transaction that changes the row and writes the
audit log (the actor is ``console:<email>``, or ``console:admin-token``), then the
affected keys are invalidated in every gateway process.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
import uuid
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.console import account_actions
from gateway.console.credits_pages import credits_section, grant_credits
from gateway.console.html import esc, field, hidden_csrf, html_page, post_button, when
from gateway.console.session import Session, csrf_token
from gateway.console.views import (
    form_int,
    form_text,
    nav_of,
    notice_of,
    require_session,
    see_other,
)
from gateway.db import directory
from gateway.db import keys as db_keys
from gateway.db import users as db_users
from gateway.db.audit import record_admin_change
from gateway.db.pool import connection
from gateway.db.usage import usage_of_user
from gateway.http.accounts import today_images, utc_today
from gateway.http.validate import has_control_characters, query_date
from gateway.services import SERVICES

__all__ = [
    "audit_page",
    "change_user",
    "grant_user_credits",
    "key_limits",
    "operator_revoke_key",
    "usage_overview",
    "user_page",
    "users_page",
]

PAGE_SIZE = 50
TOP = 20
MAX_RANGE_DAYS = 366


def _actor(session: Session) -> str:
    return f"console:{session.email}" if session.email else "console:admin-token"


def _page_number(request: web.Request) -> int:
    text = request.query.get("page", "1")
    return int(text) if text.isdigit() and 0 < int(text) < 100_000 else 1


def _pager(path: str, query: dict[str, str], page: int, more: bool) -> str:
    links = []
    if page > 1:
        links.append(
            f'<a href="{esc(path)}?{esc(_query(query, page - 1))}" rel="prev">Previous page</a>'
        )
    if more:
        links.append(
            f'<a href="{esc(path)}?{esc(_query(query, page + 1))}" rel="next">Next page</a>'
        )
    return f'<nav class="pager" aria-label="Pages">{" ".join(links)}</nav>' if links else ""


def _query(query: dict[str, str], page: int) -> str:
    return urllib.parse.urlencode({**{k: v for k, v in query.items() if v}, "page": page})


async def users_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, operator=True)
    services = request.config_dict[SERVICES]
    search = request.query.get("q", "").strip()
    if has_control_characters(search) or len(search) > 254:
        search = ""
    page = _page_number(request)
    async with connection(services.pool) as conn:
        rows = await directory.search_users(
            conn, search, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
        )
    more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
    lines = "".join(
        f'<tr><td><a href="/console/admin/users/{esc(u["id"])}">{esc(u["email"])}</a></td>'
        f"<td>{esc(u['plan'])}</td><td>{'active' if u['is_active'] else 'disabled'}</td>"
        f"<td>{when(u['created_at'])}</td></tr>"
        for u in rows
    )
    body = (
        '<form method="get" action="/console/admin/users" class="inline-form" role="search">'
        '<label for="f-q">Email contains</label>'
        f'<input id="f-q" name="q" type="search" value="{esc(search)}">'
        '<button type="submit">Search</button></form>'
        '<div class="scroll"><table><caption>Users</caption><thead><tr><th scope="col">Email</th>'
        '<th scope="col">Plan</th><th scope="col">State</th><th scope="col">Created</th></tr>'
        f"</thead><tbody>{lines}</tbody></table></div>"
        + ("" if rows else "<p>No users match.</p>")
        + _pager("/console/admin/users", {"q": search}, page, more)
    )
    return html_page("Users", body, nav=nav_of(request, session), path="/console/admin/users")


def _user_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.NotFound("No such user.") from None


async def user_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, operator=True)
    return await _user_page(request, session, _user_id(request))


async def _user_page(
    request: web.Request,
    session: Session,
    user_id: uuid.UUID,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    services = request.config_dict[SERVICES]
    today = utc_today(services)
    async with connection(services.pool) as conn:
        user = await db_users.get_user(conn, user_id)
        if user is None:
            raise errors.NotFound("No such user.")
        keys = await db_keys.keys_of_user(conn, user_id)
        limits = await directory.key_limits_of_user(conn, user_id)
        live = await today_images(services, conn, user_id, [k["id"] for k in keys])
        month = await usage_of_user(
            conn, user_id, today - dt.timedelta(days=29), today - dt.timedelta(days=1)
        )
    csrf = csrf_token(request)
    base = f"/console/admin/users/{user_id}"
    plans = "".join(
        f'<option value="{esc(p)}"{" selected" if p == user["plan"] else ""}>{esc(p)}</option>'
        for p in services.config.plans
    )
    state = "active" if user["is_active"] else "disabled"
    toggle = "Disable user" if user["is_active"] else "Enable user"
    key_rows = []
    for k in keys:
        lim = limits[k["id"]]
        kid = esc(k["id"])
        rpm = "" if lim["requests_per_minute"] is None else str(lim["requests_per_minute"])
        ipd = "" if lim["images_per_day"] is None else str(lim["images_per_day"])
        revoke = (
            post_button(
                f"/console/admin/keys/{k['id']}/revoke",
                "Revoke",
                csrf,
                hidden={"user": str(user_id)},
                style="danger",
            )
            if k["is_active"]
            else "revoked"
        )
        key_rows.append(
            f"<tr><td><code>{esc(k['prefix'])}</code></td><td>{esc(k['name'])}</td>"
            f"<td>{'active' if k['is_active'] else 'revoked'}</td>"
            f"<td>{live.get(str(k['id']), 0)}</td><td>{when(k['last_used_at'])}</td>"
            f'<td><form method="post" action="/console/admin/keys/{kid}/limits" '
            'class="limits-form">'
            f'{hidden_csrf(csrf)}<input type="hidden" name="user" value="{esc(user_id)}">'
            f'<label for="rpm-{kid}">Requests per minute</label>'
            f'<input id="rpm-{kid}" name="requests_per_minute" inputmode="numeric" '
            f'value="{rpm}" placeholder="plan">'
            f'<label for="ipd-{kid}">Images per day</label>'
            f'<input id="ipd-{kid}" name="images_per_day" inputmode="numeric" '
            f'value="{ipd}" placeholder="plan">'
            '<button type="submit">Set limits</button></form></td>'
            f"<td>{revoke}</td></tr>"
        )
    body = (
        f'<dl class="limits"><dt>Email</dt><dd>{esc(user["email"])}</dd>'
        f"<dt>State</dt><dd>{state}</dd><dt>Plan</dt><dd>{esc(user['plan'])}</dd>"
        f"<dt>Created</dt><dd>{when(user['created_at'])}</dd>"
        f"<dt>Images today</dt><dd>{sum(live.values())}</dd>"
        f"<dt>Images, the 29 days before</dt><dd>{sum(r['image_count'] for r in month)}</dd></dl>"
        f'<form method="post" action="{base}/plan" class="inline-form">{hidden_csrf(csrf)}'
        f'<label for="f-plan">Plan</label><select id="f-plan" name="plan">{plans}</select>'
        '<button type="submit">Change plan</button></form>'
        + post_button(
            f"{base}/state",
            toggle,
            csrf,
            hidden={"active": "false" if user["is_active"] else "true"},
            style="danger" if user["is_active"] else "",
        )
        + '<div class="scroll"><table><caption>Keys (empty limits: the plan\'s)</caption>'
        "<thead><tr>"
        '<th scope="col">Prefix</th><th scope="col">Name</th><th scope="col">State</th>'
        '<th scope="col">Today</th><th scope="col">Last used</th><th scope="col">Limits</th>'
        '<th scope="col">Revoke</th></tr></thead>'
        f"<tbody>{''.join(key_rows)}</tbody></table></div>"
        + await credits_section(services, user, csrf)
    )
    return html_page(
        f"User {user['email']}",
        body,
        nav=nav_of(request, session),
        path="/console/admin/users",
        notice=notice_of(request),
        error=error,
        status=status,
    )


async def grant_user_credits(request: web.Request) -> web.StreamResponse:
    """The grant form of a user's page: the credits changed once per form, audited."""
    session = await require_session(request, operator=True)
    services = request.config_dict[SERVICES]
    user_id = _user_id(request)
    async with connection(services.pool) as conn:
        user = await db_users.get_user(conn, user_id)
    if user is None:
        raise errors.NotFound("No such user.")
    try:
        await grant_credits(request, user, _actor(session))
    except errors.GatewayError as exc:
        return await _user_page(request, session, user_id, error=exc.message, status=exc.status)
    return see_other(f"/console/admin/users/{user_id}?done=credits")


async def _apply_user_change(
    request: web.Request, session: Session, changes: dict[str, Any]
) -> None:
    services = request.config_dict[SERVICES]
    user_id = _user_id(request)
    async with connection(services.pool) as conn, conn.transaction():
        if await db_users.update_user(conn, user_id, **changes) is None:
            raise errors.NotFound("No such user.")
        await record_admin_change(
            conn, actor=_actor(session), action="update_user", target_id=user_id, details=changes
        )
        hashes = await db_keys.key_hashes_of_user(conn, user_id)
    await services.keys.invalidate(hashes)


async def change_user(request: web.Request) -> web.StreamResponse:
    """``.../plan`` (a plan name) or ``.../state`` (``active``: true or false)."""
    session = await require_session(request, operator=True)
    form = await request.post()
    what = request.match_info["what"]
    if what == "plan":
        plan = form_text(form, "plan")
        if plan not in request.config_dict[SERVICES].config.plans:
            return await _user_page(
                request, session, _user_id(request), error="Pick one of the plans.", status=400
            )
        changes: dict[str, Any] = {"plan": plan}
    else:
        active = form_text(form, "active")
        if active not in ("true", "false"):
            return await _user_page(
                request,
                session,
                _user_id(request),
                error="Say whether the user is active.",
                status=400,
            )
        changes = {"is_active": active == "true"}
    await _apply_user_change(request, session, changes)
    return see_other(f"/console/admin/users/{_user_id(request)}?done=updated")


async def _change_key(request: web.Request, session: Session, changes: dict[str, Any]) -> str:
    """Apply ``changes`` to the key in the path; where to go next (its user's page)."""
    services = request.config_dict[SERVICES]
    try:
        key_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.NotFound("No such key.") from None
    async with connection(services.pool) as conn, conn.transaction():
        if await db_keys.key_for_update(conn, key_id) is None:
            raise errors.NotFound("No such key.")
        row = await db_keys.update_key(conn, key_id, **changes)
        await record_admin_change(
            conn, actor=_actor(session), action="update_key", target_id=key_id, details=changes
        )
    await services.keys.invalidate([row["key_hash"]])
    return f"/console/admin/users/{row['user_id']}?done=updated"


async def key_limits(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, operator=True)
    form = await request.post()
    try:
        changes = {
            "requests_per_minute": form_int(form, "requests_per_minute", minimum=1),
            "images_per_day": form_int(form, "images_per_day", minimum=1),
        }
    except errors.InvalidRequest as exc:
        try:
            user_id = uuid.UUID(form_text(form, "user"))
        except ValueError:
            raise exc from None
        return await _user_page(request, session, user_id, error=exc.message, status=400)
    return see_other(await _change_key(request, session, changes))


async def operator_revoke_key(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, operator=True)
    return see_other(await _change_key(request, session, {"is_active": False}))


async def usage_overview(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, operator=True)
    services = request.config_dict[SERVICES]
    today = utc_today(services)
    error = ""
    try:
        end = query_date(request.query.get("end") or None, "end") or today
        start = query_date(request.query.get("start") or None, "start") or end - dt.timedelta(
            days=29
        )
        if end < start or (end - start).days >= MAX_RANGE_DAYS:
            raise errors.InvalidRequest(
                f"The range must run forwards, {MAX_RANGE_DAYS} days at most."
            )
    except errors.InvalidRequest as exc:
        error, start, end = exc.message, today - dt.timedelta(days=29), today
    if start <= today <= end:
        try:  # today's counts are in Redis first: write them through
            await services.flusher.flush()
        except Exception:
            error = error or "Today's counts could not be brought up to date; they may lag."
    email_like = request.query.get("email", "").strip()[:254] or None
    if email_like is not None and has_control_characters(email_like):
        error, email_like = error or "The email filter must not hold control characters.", None
    async with connection(services.pool) as conn:
        users = await directory.usage_by_user_between(
            conn, start, end, limit=TOP, email_like=email_like
        )
        keys = await directory.top_keys_between(conn, start, end, limit=TOP, email_like=email_like)
    user_rows = "".join(
        f'<tr><td><a href="/console/admin/users/{esc(u["user_id"])}">{esc(u["email"])}</a></td>'
        f"<td>{u['images']}</td></tr>"
        for u in users
    )
    key_rows = "".join(
        f"<tr><td><code>{esc(k['prefix'])}</code> {esc(k['name'])}</td>"
        f'<td><a href="/console/admin/users/{esc(k["user_id"])}">{esc(k["email"])}</a></td>'
        f"<td>{k['images']}</td></tr>"
        for k in keys
    )
    body = (
        '<form method="get" action="/console/admin/usage" class="inline-form">'
        f"{field('From', 'start', kind='date', value=start.isoformat())}"
        f"{field('To', 'end', kind='date', value=end.isoformat())}"
        f"{field('Email contains', 'email', value=email_like or '', required=False)}"
        '<button type="submit">Show</button></form>'
        f"<p>Images from {start.isoformat()} to {end.isoformat()}: "
        f"<strong>{sum(u['images'] for u in users)}</strong> (top {TOP} users).</p>"
        '<div class="scroll"><table><caption>Top users</caption><thead><tr>'
        '<th scope="col">User</th>'
        f'<th scope="col">Images</th></tr></thead><tbody>{user_rows}</tbody></table></div>'
        f'<div class="scroll"><table><caption>Top keys</caption><thead><tr><th scope="col">Key</th>'
        '<th scope="col">User</th><th scope="col">Images</th></tr></thead>'
        f"<tbody>{key_rows}</tbody>"
        "</table></div>"
    )
    return html_page(
        "Usage across users",
        body,
        nav=nav_of(request, session),
        path="/console/admin/usage",
        error=error,
    )


async def audit_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, operator=True)
    services = request.config_dict[SERVICES]
    actor = request.query.get("actor", "").strip()
    target_text = request.query.get("target", "").strip()
    error = ""
    target = None
    if target_text:
        try:
            target = uuid.UUID(target_text)
        except ValueError:
            error = "The target must be an id (a UUID)."
    if has_control_characters(actor):
        actor = ""
    page = _page_number(request)
    rows = await account_actions.list_audit(
        services,
        actor=actor or None,
        target=target,
        limit=PAGE_SIZE + 1,
        offset=(page - 1) * PAGE_SIZE,
    )
    more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
    lines = "".join(
        f"<tr><td>{when(r['created_at'])}</td><td>{esc(r['actor'])}</td><td>{esc(r['action'])}</td>"
        f"<td><code>{esc(r['target_id'])}</code></td><td><code>{esc(r['details'])}</code></td></tr>"
        for r in rows
    )
    body = (
        '<form method="get" action="/console/admin/audit" class="inline-form">'
        f"{field('Actor', 'actor', value=actor, required=False)}"
        f"{field('Target id', 'target', value=target_text, required=False)}"
        '<button type="submit">Filter</button></form>'
        '<div class="scroll"><table><caption>Changes, newest first</caption><thead><tr>'
        '<th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th>'
        '<th scope="col">Target</th><th scope="col">Details</th></tr></thead>'
        f"<tbody>{lines}</tbody></table></div>"
        + ("" if rows else "<p>No entries.</p>")
        + _pager("/console/admin/audit", {"actor": actor, "target": target_text}, page, more)
    )
    return html_page(
        "Audit log", body, nav=nav_of(request, session), path="/console/admin/audit", error=error
    )
