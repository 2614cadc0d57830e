"""The admin API's reports: usage across users for a date range, and the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.db.audit import list_admin_changes
from gateway.db.pool import connection
from gateway.db.usage import usage_by_model_between
from gateway.http.accounts import utc_today
from gateway.http.admin import authorise, page_limit, query_uuid
from gateway.http.responses import json_response
from gateway.http.schemas.admin import (
    AdminUsage,
    AuditEntry,
    AuditLog,
    KeyImages,
    ModelImages,
    UserImages,
)
from gateway.http.schemas.usage import GROUPINGS, MAX_DAYS, UsageDay
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
    model = request.query.get("model") or None
    if model is not None and has_control_characters(model):
        raise errors.InvalidRequest("'model' must not contain control characters.", param="model")
    group_by = request.query.get("group_by")
    if group_by is not None and group_by not in GROUPINGS:
        raise errors.InvalidRequest(
            f"'group_by' must be one of: {', '.join(GROUPINGS)}.", param="group_by"
        )
    if start <= today <= end:
        # Today's counts live in Redis first: write them through before reading.
        try:
            await services.flusher.flush()
        except Exception as exc:
            raise errors.ServiceUnavailable("Usage could not be brought up to date.") from exc
    async with connection(services.pool) as conn:
        rows = await usage_by_model_between(conn, start, end, model=model)
    users: dict[Any, UserImages] = {}
    keys: dict[Any, KeyImages] = {}
    models: dict[str, ModelImages] = {}
    grouped: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        images, credits = row["images"], row["credits"]
        user = users.get(row["user_id"])
        if user is None:
            user = users[row["user_id"]] = UserImages(row["user_id"], row["email"], 0)
        key = keys.get(row["api_key_id"])
        if key is None:
            key = keys[row["api_key_id"]] = KeyImages(row["api_key_id"], row["user_id"], 0)
        used = models.get(row["model"])
        if used is None:
            used = models[row["model"]] = ModelImages(row["model"], 0)
        for entry in (user, key, used):
            entry.images += images
            entry.credits += credits
        if group_by is not None:
            slot = (
                (row["usage_date"], None, None)
                if group_by == "day"
                else (None, row["api_key_id"], None)
                if group_by == "key"
                else (None, None, row["model"])
            )
            totals = grouped.setdefault(slot, [0, 0])
            totals[0] += images
            totals[1] += credits

    def most_first(entry: UserImages | KeyImages) -> tuple[int, str]:
        return (
            -entry.images,
            str(entry.user_id if isinstance(entry, UserImages) else entry.api_key_id),
        )

    return json_response(
        AdminUsage(
            start=start,
            end=end,
            users=sorted(users.values(), key=lambda u: (-u.images, str(u.user_id))),
            keys=sorted(keys.values(), key=lambda k: (-k.images, str(k.api_key_id))),
            models=sorted(models.values(), key=lambda m: (-m.images, m.model)),
            total=sum(row["images"] for row in rows),
            credits=sum(row["credits"] for row in rows),
            data=None
            if group_by is None
            else [
                UsageDay(date=date, api_key_id=kid, model=name, images=images, credits=credits)
                for (date, kid, name), (images, credits) in sorted(
                    grouped.items(), key=lambda item: tuple(str(part or "") for part in item[0])
                )
            ],
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
