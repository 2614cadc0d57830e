"""The admin API's reports: usage across users for a date range, and the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.db.audit import list_admin_changes
from gateway.db.pool import connection
from gateway.db.usage import usage_by_key_for_range
from gateway.http.accounts import utc_today
from gateway.http.admin import authorise, page_limit, query_uuid
from gateway.http.responses import json_response
from gateway.http.schemas.admin import (
    AdminUsage,
    AuditEntry,
    AuditLog,
    KeyImages,
    UserImages,
)
from gateway.http.schemas.usage import MAX_DAYS
from gateway.http.validate import has_control_characters, query_date

__all__ = ["read_audit_log", "usage_for_range"]


def _range(request: web.Request, today: dt.date) -> tuple[dt.date, dt.date]:
    """``start``..``end`` (``date``: that one day); default: today."""
    day = query_date(request.query.get("date"), "date")
    given_start = query_date(request.query.get("start"), "start")
    given_end = query_date(request.query.get("end"), "end")
    start = given_start or day or (min(given_end, today) if given_end else today)
    end = given_end or day or max(start, today)
    if end < start:
        raise errors.InvalidRequest("'end' must not be before 'start'.", param="end")
    if (end - start).days + 1 > MAX_DAYS:
        raise errors.InvalidRequest(f"The range may cover at most {MAX_DAYS} days.", param="start")
    return start, end


async def usage_for_range(request: web.Request) -> web.Response:
    services = authorise(request)
    today = utc_today(services)
    start, end = _range(request, today)
    if start <= today <= end:
        # Today's counts live in Redis first: write them through before reading.
        try:
            await services.flusher.flush()
        except Exception as exc:
            raise errors.ServiceUnavailable("Usage could not be brought up to date.") from exc
    async with connection(services.pool) as conn:
        rows = await usage_by_key_for_range(conn, start, end)
    users: dict[Any, UserImages] = {}
    for row in rows:
        entry = users.get(row["user_id"])
        if entry is None:
            entry = users[row["user_id"]] = UserImages(row["user_id"], row["email"], 0)
        entry.images += row["images"]
    return json_response(
        AdminUsage(
            start=start,
            end=end,
            users=sorted(users.values(), key=lambda u: (-u.images, str(u.user_id))),
            keys=[KeyImages(row["api_key_id"], row["user_id"], row["images"]) for row in rows],
            total=sum(row["images"] for row in rows),
        )
    )


async def read_audit_log(request: web.Request) -> web.Response:
    services = authorise(request)
    actor = request.query.get("actor") or None
    if actor is not None and has_control_characters(actor):
        raise errors.InvalidRequest("'actor' must not contain control characters.", param="actor")
    target = query_uuid(request, "target")
    after = query_uuid(request, "after")
    limit = page_limit(request)
    async with connection(services.pool) as conn:
        rows = await list_admin_changes(
            conn, limit=limit + 1, actor=actor, target_id=target, after=after
        )
    if rows is None:
        raise errors.InvalidRequest("'after' must be the id of an audit entry.", param="after")
    return json_response(
        AuditLog(data=[AuditEntry(**row) for row in rows[:limit]], has_more=len(rows) > limit)
    )
