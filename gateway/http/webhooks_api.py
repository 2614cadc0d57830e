"""``POST /v1/webhooks/secret``: a new secret for the caller's webhooks (access token).

The secret is shown once; the gateway keeps only a nonce it is derived from
(:mod:`gateway.webhooks.signing`). A new secret signs every webhook sent from now on, for
jobs already submitted too; the one it replaces still signs them as well (a second
signature) for ``webhooks.rotation_grace_hours``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.db.pool import connection
from gateway.http.responses import json_response
from gateway.http.schemas.webhooks import WebhookSecret
from gateway.http.token_auth import current_user
from gateway.services import SERVICES
from gateway.webhooks.signing import new_nonce
from gateway.webhooks.store import set_nonce

__all__ = ["create_webhook_secret"]


async def create_webhook_secret(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    user = await current_user(request, services)
    nonce = new_nonce()
    now = services.wall_clock()
    grace = services.config.webhooks.rotation_grace_hours * 3600
    async with connection(services.pool) as conn:
        until = await set_nonce(
            conn, user["id"], nonce, now=now, previous_until=now + grace if grace > 0 else None
        )
    shown = services.webhook_secrets.shown(str(user["id"]), nonce)
    expires = None if until is None else int(until)
    return json_response(
        WebhookSecret(secret=shown, previous_secret_expires_at=expires), status=201
    )
