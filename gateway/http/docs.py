"""``GET /openapi.json`` and ``GET /docs``: the API description, served.

``GET /docs`` is a self-contained page (``static/``): it fetches ``openapi.json`` from
this gateway and loads nothing from anywhere else, as its Content-Security-Policy says.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from gateway.config import Config
from gateway.services import CONFIG, SERVICES

__all__ = [
    "API_DOCUMENT",
    "DOCS_CSP",
    "DOCS_STATIC_DIR",
    "ApiDocument",
    "docs_page",
    "openapi_json",
]

DOCS_STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The docs page runs only its own script and style, and talks only to its own origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

Builder = Callable[..., dict[str, Any]]


class ApiDocument:
    """One app's OpenAPI document: built on the first request (when the backends' sizes
    are known) by ``build(config, model_sizes=...)``, and served as is from then on."""

    def __init__(self, build: Builder) -> None:
        self._build = build
        self._body: bytes | None = None

    def body(self, app: web.Application) -> bytes:
        if self._body is None:
            router = app[SERVICES].router if SERVICES in app else None
            sizes: Mapping[str, Sequence[str]] | None = (
                {m: list(chain[0].backend.size_names) for m, chain in router.models.items()}
                if router is not None
                else None
            )
            config: Config = app[CONFIG]
            self._body = msgspec.json.encode(self._build(config, model_sizes=sizes))
        return self._body


API_DOCUMENT = web.AppKey("api_document", ApiDocument)


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI 3.1 document of this gateway."""
    body = request.app[API_DOCUMENT].body(request.app)
    return web.Response(body=body, content_type="application/json")


@functools.cache
def _docs_html() -> bytes:
    return (DOCS_STATIC_DIR / "docs.html").read_bytes()


async def docs_page(request: web.Request) -> web.Response:
    """``GET /docs``: the API reference page; it renders ``openapi.json`` in the browser."""
    return web.Response(
        body=_docs_html(),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": DOCS_CSP,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
