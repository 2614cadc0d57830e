"""Every route of the gateway, in one table."""

from __future__ import annotations

from aiohttp import web

from gateway.http.images import generate_images
from gateway.http.meta import healthz, list_models, readyz

__all__ = ["setup_routes"]


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/images/generations", generate_images)
    app.router.add_post("/v1/generate", generate_images)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
