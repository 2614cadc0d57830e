"""The admin API for operators: users, keys, credits, usage. Bearer ``admin.token``; off
when unset.

Every change is written to ``admin_audit_log`` and logged (who, what, when), and takes
effect in every gateway process at once (the affected keys are invalidated).
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

import msgspec
import orjson
from aiohttp import web
from msgspec import UNSET

from gateway import errors
from gateway.credits.changes import change_user_credits
from gateway.db import keys as db_keys
from gateway.db import users as db_users
from gateway.db.audit import record_admin_change
from gateway.db.pool import connection
from gateway.db.usage import usage_by_key_for_day
from gateway.http.accounts import today_images, utc_today
from gateway.http.body import decode_body
from gateway.http.credits_api import balance_of
from gateway.http.responses import json_response
from gateway.http.schemas.admin import (
    AdminKey,
    AdminKeyChange,
    AdminUsage,
    AdminUserChange,
    AdminUserDetail,
    AdminUserList,
    KeyImages,
    UserImages,
    admin_user_of,
)
from gateway.http.schemas.credits import CreditChange
from gateway.http.schemas.keys import key_of
from gateway.http.token_auth import bearer_token
from gateway.http.validate import has_control_characters, path_uuid, query_date
from gateway.services import SERVICES, Services

__all__ = [
    "authorise",
    "change_credits",
    "find_users",
    "get_user",
    "no_such_admin_route",
    "patch_key",
    "patch_user",
    "usage_for_day",
]

log = logging.getLogger("gateway.admin")

ACTOR = "admin-token"
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def authorise(request: web.Request) -> Services:
    """The services, if the request carries the admin token; else the 401 (or the 404
    while the admin API is off)."""
    services = request.app[SERVICES]
    expected = services.config.admin.token
    if not expected:
        raise errors.NotFound()
    given = bearer_token(request)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.InvalidToken("The admin token is not valid.")
    return services


async def _audit(
    conn: Any, action: str, target: Any, details: dict[str, Any], actor: str = ACTOR
) -> None:
    await record_admin_change(conn, actor=actor, action=action, target_id=target, details=details)
    log.warning(
        "admin change: actor=%s action=%s target=%s details=%s",
        actor,
        action,
        target,
        orjson.dumps(details).decode(),
    )


def _given(change: AdminUserChange | AdminKeyChange) -> dict[str, Any]:
    """The fields a change sends (``null`` included), by name."""
    return {
        name: value for name, value in msgspec.structs.asdict(change).items() if value is not UNSET
    }


async def find_users(request: web.Request) -> web.Response:
    services = authorise(request)
    email = request.query.get("email")
    if email is not None and has_control_characters(email):
        raise errors.InvalidRequest("'email' must not contain control characters.", param="email")
    async with connection(services.pool) as conn:
        if email is not None:
            user = await db_users.find_user_by_email(conn, email.strip().lower())
            users = [user] if user is not None else []
        else:
            users = await db_users.list_users(conn)
    return json_response(AdminUserList(data=[admin_user_of(u) for u in users]))


async def get_user(request: web.Request) -> web.Response:
    services = authorise(request)
    user_id = path_uuid(request.match_info["id"])
    async with connection(services.pool) as conn:
        user = await db_users.get_user(conn, user_id)
        if user is None:
            raise errors.NotFound("No such user.")
        keys = await db_keys.keys_of_user(conn, user_id)
        counts = await today_images(services, conn, user_id, [k["id"] for k in keys])
    plan = services.config.plans.get(user["plan"])
    credits = await services.credits.read(
        str(user_id), plan.monthly_credits if plan is not None else None
    )
    return json_response(
        AdminUserDetail(
            **msgspec.structs.asdict(admin_user_of(user)),
            keys=[key_of(k) for k in keys],
            usage_today=sum(counts.values()),
            credits=balance_of(credits),
        )
    )


async def patch_user(request: web.Request) -> web.Response:
    services = authorise(request)
    user_id = path_uuid(request.match_info["id"])
    plans = {"plans": ", ".join(services.config.plans)}
    body = await decode_body(request, AdminUserChange, services.config.server, plans)
    changes: dict[str, Any] = _given(body)
    if body.plan is not UNSET and body.plan not in services.config.plans:
        raise errors.InvalidRequest(
            AdminUserChange.messages["plan"].format_map(plans), param="plan"
        )
    if not changes:
        raise errors.InvalidRequest("Nothing to change: send 'plan' and/or 'is_active'.")
    async with connection(services.pool) as conn, conn.transaction():
        user = await db_users.update_user(conn, user_id, **changes)
        if user is None:
            raise errors.NotFound("No such user.")
        await _audit(conn, "update_user", user_id, changes)
        hashes = await db_keys.key_hashes_of_user(conn, user_id)
    await services.keys.invalidate(hashes)
    return json_response(admin_user_of(user))


async def patch_key(request: web.Request) -> web.Response:
    services = authorise(request)
    key_id = path_uuid(request.match_info["id"])
    body = await decode_body(request, AdminKeyChange, services.config.server)
    changes = _given(body)
    if not changes:
        raise errors.InvalidRequest(
            "Nothing to change: send 'requests_per_minute', 'images_per_day' or 'is_active'."
        )
    async with connection(services.pool) as conn, conn.transaction():
        if await db_keys.key_for_update(conn, key_id) is None:
            raise errors.NotFound("No such key.")
        row = await db_keys.update_key(conn, key_id, **changes)
        await _audit(conn, "update_key", key_id, changes)
    await services.keys.invalidate([row["key_hash"]])
    return json_response(
        AdminKey(
            **msgspec.structs.asdict(key_of(row)),
            user_id=row["user_id"],
            requests_per_minute=row["requests_per_minute"],
            images_per_day=row["images_per_day"],
        )
    )


async def change_credits(request: web.Request) -> web.Response:
    """``POST /admin/users/{id}/credits``: add (or take away) purchased credits, once per
    ``Idempotency-Key``; audited."""
    services = authorise(request)
    user_id = path_uuid(request.match_info["id"])
    key = request.headers.get("Idempotency-Key")
    if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise errors.InvalidRequest(
            "Send an 'Idempotency-Key' header (1 to 255 visible ASCII characters): a retry"
            " with the same key changes the credits once.",
            param="Idempotency-Key",
        )
    body = await decode_body(request, CreditChange, services.config.server)
    if body.amount == 0:
        raise errors.InvalidRequest(CreditChange.messages["amount"], param="amount")
    async with connection(services.pool) as conn:
        user = await db_users.get_user(conn, user_id)
    if user is None:
        raise errors.NotFound("No such user.")
    try:
        replayed = await change_user_credits(
            services.pool, services.credits, user_id, body.amount, body.reason, key, ACTOR
        )
        plan = services.config.plans.get(user["plan"])
        credits = await services.credits.read(
            str(user_id), plan.monthly_credits if plan is not None else None
        )
    except errors.GatewayError:
        raise
    except Exception as exc:
        raise errors.ServiceUnavailable("The credits could not be changed. Retry.") from exc
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json_response(balance_of(credits), headers=headers)


async def usage_for_day(request: web.Request) -> web.Response:
    services = authorise(request)
    date = query_date(request.query.get("date"), "date")
    if date is None:
        raise errors.InvalidRequest("'date' is required, YYYY-MM-DD.", param="date")
    if date == utc_today(services):
        # Today's counts live in Redis first: write them through before reading.
        try:
            await services.flusher.flush()
        except Exception as exc:
            raise errors.ServiceUnavailable("Usage could not be brought up to date.") from exc
    async with connection(services.pool) as conn:
        rows = await usage_by_key_for_day(conn, date)
    users: dict[Any, UserImages] = {}
    for row in rows:
        entry = users.get(row["user_id"])
        if entry is None:
            entry = users[row["user_id"]] = UserImages(row["user_id"], row["email"], 0)
        entry.images += row["images"]
    return json_response(
        AdminUsage(
            date=date,
            users=list(users.values()),
            keys=[KeyImages(row["api_key_id"], row["user_id"], row["images"]) for row in rows],
            total=sum(row["images"] for row in rows),
        )
    )


async def no_such_admin_route(request: web.Request) -> web.Response:
    """Any other method or path under /admin: 404 (when off, nothing hints it exists)."""
    authorise(request)
    raise errors.NotFound()
