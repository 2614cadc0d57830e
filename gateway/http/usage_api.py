"""``GET /v1/usage``: images and credits per key per day for the caller (or summed by day
or by key), today's live image counts included."""

from __future__ import annotations

import datetime as dt
import uuid

from aiohttp import web

from gateway import errors
from gateway.db.credits import credits_by_key_and_day
from gateway.db.keys import keys_of_user
from gateway.db.pool import connection
from gateway.db.usage import usage_of_user
from gateway.http.accounts import today_images, utc_today
from gateway.http.responses import json_response
from gateway.http.schemas.usage import DEFAULT_DAYS, GROUPINGS, MAX_DAYS, Usage, UsageDay
from gateway.http.token_auth import current_user
from gateway.http.validate import query_date
from gateway.services import SERVICES

__all__ = ["read_usage"]


async def read_usage(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    user = await current_user(request, services)
    today = utc_today(services)
    end = query_date(request.query.get("end"), "end") or today
    start = query_date(request.query.get("start"), "start") or max(
        dt.date.min + dt.timedelta(days=DEFAULT_DAYS - 1), end
    ) - dt.timedelta(days=DEFAULT_DAYS - 1)
    if end < start:
        raise errors.InvalidRequest("'end' must not be before 'start'.", param="end")
    if (end - start).days + 1 > MAX_DAYS:
        raise errors.InvalidRequest(f"The range may cover at most {MAX_DAYS} days.", param="start")
    group_by = request.query.get("group_by")
    if group_by is not None and group_by not in GROUPINGS:
        raise errors.InvalidRequest(
            f"'group_by' must be one of: {', '.join(GROUPINGS)}.", param="group_by"
        )
    key_id: uuid.UUID | None = None
    async with connection(services.pool) as conn:
        keys = await keys_of_user(conn, user["id"])
        own = {k["id"] for k in keys}
        if "key_id" in request.query:
            try:
                key_id = uuid.UUID(request.query["key_id"])
            except ValueError:
                raise errors.NotFound("No such key.") from None
            if key_id not in own:
                raise errors.NotFound("No such key.")
        rows = await usage_of_user(conn, user["id"], start, end, key_id)
        counts = {(r["usage_date"], str(r["api_key_id"])): r["image_count"] for r in rows}
        if start <= today <= end:
            wanted = [key_id] if key_id is not None else sorted(own)
            for kid, images in (await today_images(services, conn, user["id"], wanted)).items():
                if images or (today, kid) in counts:
                    counts[(today, kid)] = images
        spent = await credits_by_key_and_day(conn, user["id"], start, end)
    if key_id is not None:
        spent = {slot: credits for slot, credits in spent.items() if slot[1] == str(key_id)}
    grouped: dict[tuple[dt.date | None, str | None], list[int]] = {}
    for slot in sorted(counts.keys() | spent.keys()):
        date, kid = slot
        group = (date, None) if group_by == "day" else (None, kid) if group_by == "key" else slot
        row = grouped.setdefault(group, [0, 0])
        row[0] += counts.get(slot, 0)
        row[1] += spent.get(slot, 0)
    data = [
        UsageDay(
            date=date,
            api_key_id=uuid.UUID(kid) if kid is not None else None,
            images=images,
            credits=credits,
        )
        for (date, kid), (images, credits) in sorted(grouped.items(), key=_order)
    ]
    return json_response(
        Usage(
            data=data,
            total=sum(row.images for row in data),
            credits=sum(row.credits for row in data),
        )
    )


def _order(item: tuple[tuple[dt.date | None, str | None], list[int]]) -> tuple[str, str]:
    (date, kid), _ = item
    return (date.isoformat() if date is not None else "", kid or "")
