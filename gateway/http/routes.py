"""The router: every operation of :data:`~gateway.http.operations.OPERATIONS`, and the
few routes outside the API description."""

from __future__ import annotations

from aiohttp import web

from gateway.http.admin import no_such_admin_route
from gateway.http.docs import API_DOCUMENT, DOCS_STATIC_DIR, ApiDocument, docs_page
from gateway.http.health import metrics
from gateway.http.openapi import build_openapi
from gateway.http.operations import OPERATIONS
from gateway.services import SERVICES, Services

__all__ = ["metrics_app", "setup_routes"]


#: What a job worker (``gateway worker``) serves.
_WORKER_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def setup_routes(
    app: web.Application, *, public_api: bool = True, serve_metrics: bool = True
) -> None:
    """Every operation; with ``public_api`` False only health and metrics; with
    ``serve_metrics`` False no ``/metrics`` (``server.metrics_port``: :func:`metrics_app`)."""
    operations = [op for op in OPERATIONS if serve_metrics or op.handler is not metrics]
    if not public_api:
        for operation in operations:
            if operation.path in _WORKER_PATHS:
                app.router.add_get(operation.path, operation.handler)
        return
    for operation in operations:
        if operation.method == "GET":
            app.router.add_get(operation.path, operation.handler)  # and HEAD
        else:
            app.router.add_route(operation.method, operation.path, operation.handler)
    # Any other method or path under /admin: 404 (when off, nothing hints it exists).
    app.router.add_route("*", "/admin{tail:(/.*)?}", no_such_admin_route)
    app.router.add_get("/docs", docs_page)
    app.router.add_static("/docs/static", DOCS_STATIC_DIR)
    app[API_DOCUMENT] = ApiDocument(build_openapi)


def metrics_app(services: Services) -> web.Application:
    """``GET /metrics`` and nothing else: what ``server.metrics_port`` serves."""
    app = web.Application()
    app[SERVICES] = services
    app.router.add_get("/metrics", metrics)
    return app
