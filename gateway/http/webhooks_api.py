"""``POST /v1/webhooks/secret``: a new secret for the caller's webhooks (access token).

The secret is shown once; the gateway keeps only a nonce it is derived from
(:mod:`gateway.webhooks.signing`). A new secret replaces the old one at once, for the
webhooks of jobs already submitted too.
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
    async with connection(services.pool) as conn:
        await set_nonce(conn, user["id"], nonce)
    shown = services.webhook_secrets.shown(str(user["id"]), nonce)
    return json_response(WebhookSecret(secret=shown), status=201)
