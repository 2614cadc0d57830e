"""Register, log in, and read one's own account."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from gateway.accounts.login import authenticate, sign_up, throttle_ip
from gateway.db.keys import keys_of_user
from gateway.db.pool import connection
from gateway.db.usage import day_of_date, usage_of_user
from gateway.http.body import decode_body
from gateway.http.responses import json_response
from gateway.http.schemas.accounts import (
    EMAIL_MESSAGE,
    Credentials,
    Login,
    Me,
    PlanLimits,
    TodayUsage,
    Token,
    User,
)
from gateway.http.token_auth import current_user
from gateway.http.validate import normal_email
from gateway.services import SERVICES, Services
from gateway.usage.live import live_counts

__all__ = ["login", "me", "register", "today_images", "utc_today"]


async def register(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await throttle_ip(services, "register", services.client_ip.of(request))
    body = await decode_body(request, Credentials, services.config.server)
    email = normal_email(body.email, EMAIL_MESSAGE)
    user = await sign_up(services, email, body.password)
    return json_response(
        User(id=user["id"], email=user["email"], plan=user["plan"], created_at=user["created_at"]),
        status=201,
    )


async def login(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await throttle_ip(services, "login", services.client_ip.of(request))
    body = await decode_body(request, Login, services.config.server)
    user_id, generation = await authenticate(services, body.email, body.password)
    return json_response(
        Token(
            access_token=services.tokens.issue(user_id, generation),
            token_type="bearer",  # noqa: S106 (the scheme's name, no secret)
            expires_in=services.tokens.ttl_seconds,
        )
    )


def utc_today(services: Services) -> dt.date:
    return dt.datetime.fromtimestamp(services.wall_clock(), dt.UTC).date()


async def today_images(
    services: Services, conn: Any, user_id: Any, key_ids: list[Any]
) -> dict[str, int]:
    """Today's images per key of a user: Redis's live count, else what Postgres has."""
    today = utc_today(services)
    stored = {
        str(row["api_key_id"]): row["image_count"]
        for row in await usage_of_user(conn, user_id, today, today)
    }
    ids = [str(k) for k in key_ids]
    owner = str(user_id)
    live = await live_counts(
        services.redis, services.layout, [(owner, key_id) for key_id in ids], day_of_date(today)
    )
    return {key_id: live.get(key_id, stored.get(key_id, 0)) for key_id in ids}


async def me(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    user = await current_user(request, services)
    plan = (
        services.config.plans.get(user["plan"])
        or services.config.plans[services.config.default_plan]
    )
    async with connection(services.pool) as conn:
        keys = await keys_of_user(conn, user["id"])
        counts = await today_images(services, conn, user["id"], [k["id"] for k in keys])
    return json_response(
        Me(
            id=user["id"],
            email=user["email"],
            plan=user["plan"],
            is_active=user["is_active"],
            created_at=user["created_at"],
            limits=PlanLimits(
                requests_per_minute=plan.requests_per_minute,
                images_per_day=plan.images_per_day,
                max_images_per_request=plan.max_images_per_request,
            ),
            usage=TodayUsage(today=sum(counts.values())),
        )
    )
