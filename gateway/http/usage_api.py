"""``GET /v1/usage``: images and credits per key, day and model for the caller (or summed
by day, by key or by model; ``model=`` keeps one), today's live counts included."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.db.keys import keys_of_user
from gateway.db.pool import connection
from gateway.db.usage import day_of_date, usage_by_model_between
from gateway.http.accounts import utc_today
from gateway.http.responses import json_response
from gateway.http.schemas.usage import DEFAULT_DAYS, GROUPINGS, MAX_DAYS, Usage, UsageDay
from gateway.http.token_auth import current_user
from gateway.http.validate import has_control_characters, query_date
from gateway.services import SERVICES
from gateway.usage.labels import split_label
from gateway.usage.live import live_usage

__all__ = ["read_usage"]

_Slot = tuple[Any, ...]


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
    model = request.query.get("model") or None
    if model is not None and has_control_characters(model):
        raise errors.InvalidRequest("'model' must not contain control characters.", param="model")
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
        rows = await usage_by_model_between(
            conn, start, end, user_id=user["id"], key_id=key_id, model=model
        )
    # (date, key id, model) -> [images, credits]
    counted: dict[tuple[dt.date, str, str], list[int]] = {}
    live: dict[str, list[tuple[str, int, int]]] = {}
    if start <= today <= end:
        wanted = [str(key_id)] if key_id is not None else sorted(map(str, own))
        owner = str(user["id"])
        live = await live_usage(
            services.redis, services.layout, [(owner, kid) for kid in wanted], day_of_date(today)
        )
    for row in rows:
        kid = str(row["api_key_id"])
        if row["usage_date"] == today and kid in live:
            continue  # Redis is ahead of Postgres
        _add(counted, (row["usage_date"], kid, row["model"]), row["images"], row["credits"])
    for kid, labels in live.items():
        for label, images, credits in labels:
            name = split_label(label)[0]
            if model is None or name == model:
                _add(counted, (today, kid, name), images, credits)
    grouped: dict[tuple[dt.date | None, str | None, str | None], list[int]] = {}
    for (date, kid, name), (images, credits) in counted.items():
        if not images and not credits:
            continue
        group = (
            (date, None, None)
            if group_by == "day"
            else (None, kid, None)
            if group_by == "key"
            else (None, None, name)
            if group_by == "model"
            else (date, kid, name)
        )
        _add(grouped, group, images, credits)
    data = [
        UsageDay(
            date=date,
            api_key_id=uuid.UUID(kid) if kid is not None else None,
            model=name,
            images=images,
            credits=credits,
        )
        for (date, kid, name), (images, credits) in sorted(grouped.items(), key=_order)
    ]
    return json_response(
        Usage(
            data=data,
            total=sum(row.images for row in data),
            credits=sum(row.credits for row in data),
        )
    )


def _add(totals: dict[_Slot, list[int]], slot: _Slot, images: int, credits: int) -> None:
    row = totals.setdefault(slot, [0, 0])
    row[0] += images
    row[1] += credits


def _order(
    item: tuple[tuple[dt.date | None, str | None, str | None], list[int]],
) -> tuple[str, ...]:
    (date, kid, name), _ = item
    return (date.isoformat() if date is not None else "", kid or "", name or "")
