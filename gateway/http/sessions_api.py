"""Log out, change one's password, and set a new one with a reset link."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from gateway.accounts import recovery
from gateway.db.pool import connection
from gateway.http.body import decode_body
from gateway.http.responses import json_response
from gateway.http.schemas.accounts import PasswordChange, PasswordReset, Token
from gateway.http.token_auth import authenticate
from gateway.services import SERVICES, Services

__all__ = ["change_password", "logout", "reset_password"]


def _now(services: Services) -> dt.datetime:
    return dt.datetime.fromtimestamp(services.wall_clock(), dt.UTC)


def _token(services: Services, user_id: str, generation: int) -> Token:
    return Token(
        access_token=services.tokens.issue(user_id, generation),
        token_type="bearer",  # noqa: S106 (the scheme's name, no secret)
        expires_in=services.tokens.ttl_seconds,
    )


async def logout(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    session = await authenticate(request, services)
    await services.denylist.revoke(session.token, session.claims.expires_at)
    return web.Response(status=204)


async def change_password(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    session = await authenticate(request, services)
    body = await decode_body(request, PasswordChange, services.config.server)
    async with connection(services.pool) as conn:
        generation = await recovery.change_password(
            conn,
            services.passwords,
            session.user,
            body.current_password,
            body.new_password,
            guard=services.login_guard,
        )
    return json_response(_token(services, str(session.user["id"]), generation))


async def reset_password(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.ip_throttle.hit(
        "password-reset",
        services.client_ip.of(request),
        services.config.auth.login_per_minute_per_ip,
    )
    body = await decode_body(request, PasswordReset, services.config.server)
    async with connection(services.pool) as conn:
        await recovery.reset_password(
            conn, services.passwords, body.token, body.new_password, now=_now(services)
        )
    return web.Response(status=204)
