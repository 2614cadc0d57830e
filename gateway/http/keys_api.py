"""Self-service API keys: create, list, revoke, rotate (Bearer access token)."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from gateway import errors
from gateway.db import keys as db
from gateway.db.pool import connection
from gateway.http.body import decode_body
from gateway.http.responses import json_response
from gateway.http.schemas.keys import (
    EXPIRES_AT_MESSAGE,
    KeyList,
    NewKey,
    Rotation,
    created_key,
    key_of,
)
from gateway.http.token_auth import current_user
from gateway.http.validate import future_instant, path_uuid
from gateway.keys import issue
from gateway.keys.issue import issue_key_within_cap
from gateway.services import SERVICES

__all__ = ["create_key", "list_keys", "revoke_key", "rotate_key"]


async def create_key(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    user = await current_user(request, services)
    body = await decode_body(request, NewKey, services.config.server)
    name = body.name
    expires_at = future_instant(
        body.expires_at, "expires_at", services.wall_clock(), EXPIRES_AT_MESSAGE
    )
    async with connection(services.pool) as conn:
        key, row = await issue_key_within_cap(
            conn,
            user_id=user["id"],
            prefix=services.config.keys.prefix,
            name=name,
            max_keys=services.config.auth.max_keys_per_user,
            expires_at=expires_at,
        )
    return json_response(created_key(key, row), status=201)


async def list_keys(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    user = await current_user(request, services)
    async with connection(services.pool) as conn:
        rows = await db.keys_of_user(conn, user["id"])
    return json_response(KeyList(data=[key_of(row) for row in rows]))


async def revoke_key(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    user = await current_user(request, services)
    key_id = path_uuid(request.match_info["id"])
    async with connection(services.pool) as conn:
        key_hash = await conn.fetchval(
            "UPDATE api_keys SET is_active = false WHERE id = $1 AND user_id = $2 "
            "RETURNING key_hash",
            key_id,
            user["id"],
        )
    if key_hash is None:
        raise errors.NotFound("No such key.")
    await services.keys.invalidate([key_hash])
    return web.Response(status=204)


async def rotate_key(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    user = await current_user(request, services)
    key_id = path_uuid(request.match_info["id"])
    body = Rotation()
    if request.can_read_body:
        body = await decode_body(request, Rotation, services.config.server)
    grace = body.grace_seconds
    now = dt.datetime.fromtimestamp(services.wall_clock(), dt.UTC)
    async with connection(services.pool) as conn, conn.transaction():
        key, row, old_hash = await issue.rotate_key(
            conn,
            key_id=key_id,
            user_id=user["id"],
            prefix=services.config.keys.prefix,
            grace_seconds=grace or 0,
            now=now,
        )
    await services.keys.invalidate([old_hash])
    return json_response(created_key(key, row), status=201)
