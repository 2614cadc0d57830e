"""Every route of the gateway, in one table."""

from __future__ import annotations

from aiohttp import web

from gateway.http import accounts, keys_api
from gateway.http.admin import setup_admin_routes
from gateway.http.health import healthz, list_models, metrics, readyz
from gateway.http.images import generate_images
from gateway.http.openapi import DOCS_STATIC_DIR, docs_page, openapi_json
from gateway.http.usage_api import read_usage

__all__ = ["setup_routes"]


def setup_routes(app: web.Application) -> None:
    # The data plane (API keys).
    app.router.add_post("/v1/images/generations", generate_images)
    app.router.add_post("/v1/generate", generate_images)
    app.router.add_get("/v1/models", list_models)
    # The account plane (access tokens).
    app.router.add_post("/v1/auth/register", accounts.register)
    app.router.add_post("/v1/auth/login", accounts.login)
    app.router.add_get("/v1/me", accounts.me)
    app.router.add_post("/v1/keys", keys_api.create_key)
    app.router.add_get("/v1/keys", keys_api.list_keys)
    app.router.add_delete("/v1/keys/{id}", keys_api.revoke_key)
    app.router.add_post("/v1/keys/{id}/rotate", keys_api.rotate_key)
    app.router.add_get("/v1/usage", read_usage)
    # Operators.
    setup_admin_routes(app)
    # Health.
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # The API description.
    app.router.add_get("/openapi.json", openapi_json())
    app.router.add_get("/docs", docs_page)
    app.router.add_static("/docs/static", DOCS_STATIC_DIR)
