"""The admin API for operators: users, keys, usage. Bearer ``admin.token``; off when unset.

Every change is written to ``admin_audit_log`` and logged (who, what, when), and takes
effect in every gateway process at once (the affected keys are invalidated).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from gateway import errors
from gateway.db import keys as db_keys
from gateway.db import users as db_users
from gateway.db.audit import record_admin_change
from gateway.db.pool import connection
from gateway.db.usage import usage_by_key_for_day
from gateway.http.accounts import today_images, utc_today
from gateway.http.keys_api import key_json
from gateway.http.responses import json_response, read_json_object
from gateway.http.token_auth import bearer_token
from gateway.http.validate import has_control_characters, int_field, path_uuid, query_date
from gateway.services import SERVICES, Services

__all__ = ["setup_admin_routes"]

log = logging.getLogger("gateway.admin")

ACTOR = "admin-token"
MAX_LIMIT = 10**9


def _authorise(request: web.Request) -> Services:
    services = request.app[SERVICES]
    expected = services.config.admin.token
    if not expected:
        raise errors.NotFound()
    given = bearer_token(request)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.InvalidToken("The admin token is not valid.")
    return services


def _user_json(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(user["id"]),
        "email": user["email"],
        "plan": user["plan"],
        "is_active": user["is_active"],
        "created_at": user["created_at"].isoformat(),
        "updated_at": user["updated_at"].isoformat(),
    }


async def _audit(conn: Any, action: str, target: Any, details: dict[str, Any]) -> None:
    await record_admin_change(conn, actor=ACTOR, action=action, target_id=target, details=details)
    log.warning(
        "admin change: actor=%s action=%s target=%s details=%s",
        ACTOR,
        action,
        target,
        orjson.dumps(details).decode(),
    )


async def find_users(request: web.Request) -> web.Response:
    services = _authorise(request)
    email = request.query.get("email")
    if email is not None and has_control_characters(email):
        raise errors.InvalidRequest("'email' must not contain control characters.", param="email")
    async with connection(services.pool) as conn:
        if email is not None:
            user = await db_users.find_user_by_email(conn, email.strip().lower())
            users = [user] if user is not None else []
        else:
            users = await db_users.list_users(conn)
    return json_response({"data": [_user_json(u) for u in users]})


async def get_user(request: web.Request) -> web.Response:
    services = _authorise(request)
    user_id = path_uuid(request.match_info["id"])
    async with connection(services.pool) as conn:
        user = await db_users.get_user(conn, user_id)
        if user is None:
            raise errors.NotFound("No such user.")
        keys = await db_keys.keys_of_user(conn, user_id)
        counts = await today_images(services, conn, user_id, [k["id"] for k in keys])
    body = _user_json(user)
    body["keys"] = [key_json(k) for k in keys]
    body["usage_today"] = sum(counts.values())
    return json_response(body)


async def patch_user(request: web.Request) -> web.Response:
    services = _authorise(request)
    user_id = path_uuid(request.match_info["id"])
    body = await read_json_object(request, services.config.server)
    changes: dict[str, Any] = {}
    if "plan" in body:
        if not isinstance(body["plan"], str) or body["plan"] not in services.config.plans:
            raise errors.InvalidRequest(
                f"'plan' must be one of: {', '.join(services.config.plans)}.", param="plan"
            )
        changes["plan"] = body["plan"]
    if "is_active" in body:
        if not isinstance(body["is_active"], bool):
            raise errors.InvalidRequest("'is_active' must be true or false.", param="is_active")
        changes["is_active"] = body["is_active"]
    if not changes:
        raise errors.InvalidRequest("Nothing to change: send 'plan' and/or 'is_active'.")
    async with connection(services.pool) as conn, conn.transaction():
        user = await db_users.update_user(conn, user_id, **changes)
        if user is None:
            raise errors.NotFound("No such user.")
        await _audit(conn, "update_user", user_id, changes)
        hashes = await db_keys.key_hashes_of_user(conn, user_id)
    await services.keys.invalidate(hashes)
    return json_response(_user_json(user))


async def patch_key(request: web.Request) -> web.Response:
    services = _authorise(request)
    key_id = path_uuid(request.match_info["id"])
    body = await read_json_object(request, services.config.server)
    changes: dict[str, Any] = {}
    for name in ("requests_per_minute", "images_per_day"):
        if name in body:
            changes[name] = int_field(body, name, least=1, most=MAX_LIMIT, nullable=True)
    if "is_active" in body:
        if not isinstance(body["is_active"], bool):
            raise errors.InvalidRequest("'is_active' must be true or false.", param="is_active")
        changes["is_active"] = body["is_active"]
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
    body = key_json(row)
    body["user_id"] = str(row["user_id"])
    body["requests_per_minute"] = row["requests_per_minute"]
    body["images_per_day"] = row["images_per_day"]
    return json_response(body)


async def usage_for_day(request: web.Request) -> web.Response:
    services = _authorise(request)
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
    users: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = users.setdefault(
            str(row["user_id"]),
            {"user_id": str(row["user_id"]), "email": row["email"], "images": 0},
        )
        entry["images"] += row["images"]
    return json_response(
        {
            "date": date.isoformat(),
            "users": list(users.values()),
            "keys": [
                {
                    "api_key_id": str(row["api_key_id"]),
                    "user_id": str(row["user_id"]),
                    "images": row["images"],
                }
                for row in rows
            ],
            "total": sum(row["images"] for row in rows),
        }
    )


async def no_such_admin_route(request: web.Request) -> web.Response:
    """Any other method or path under /admin: 404 (when off, nothing hints it exists)."""
    _authorise(request)
    raise errors.NotFound()


def setup_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/users", find_users)
    app.router.add_get("/admin/users/{id}", get_user)
    app.router.add_patch("/admin/users/{id}", patch_user)
    app.router.add_patch("/admin/keys/{id}", patch_key)
    app.router.add_get("/admin/usage", usage_for_day)
    app.router.add_route("*", "/admin{tail:(/.*)?}", no_such_admin_route)
