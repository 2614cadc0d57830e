"""``GET /v1/usage``: images per key per day for the caller, today's live counts included."""

from __future__ import annotations

import datetime as dt
import uuid

from aiohttp import web

from gateway import errors
from gateway.db.keys import keys_of_user
from gateway.db.pool import connection
from gateway.db.usage import usage_of_user
from gateway.http.accounts import today_images, utc_today
from gateway.http.responses import json_response
from gateway.http.schemas.usage import DEFAULT_DAYS, MAX_DAYS, Usage, UsageDay
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
    data = [
        UsageDay(date=date, api_key_id=uuid.UUID(kid), images=images)
        for (date, kid), images in sorted(counts.items())
    ]
    return json_response(Usage(data=data, total=sum(counts.values())))
