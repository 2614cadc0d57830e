"""The web console at ``/console/``: customers' keys, usage, credits, jobs and playground;
operators' users (with their credits), usage and audit log. On unless ``console.enabled`` is false.

Why it is built this way:

* Server-rendered HTML from the gateway itself, as a sub-application (its own
  middleware guards only its own routes). Each page is a handler that runs the same
  core functions as the JSON API (:mod:`gateway.accounts.login`, :mod:`gateway.keys`,
  :mod:`gateway.db`) and returns one f-string page (:mod:`gateway.console.html`). No
  template engine, no build step, no Node, no third-party asset: the pages are a few
  forms and tables, and a template language would add a dependency to save little.
* One stylesheet and one small script ship in ``static/``. The script only copies a new
  key to the clipboard and runs the playground's request (or its job, polled until it
  ends); everything else is plain forms, so every page works from the keyboard and
  without the script. The pages obey the same strict Content-Security-Policy as
  ``/docs``: no inline script or style.
* Sessions and CSRF: :mod:`gateway.console.session`. Account operations (log out,
  password changes, reset links) are :mod:`gateway.accounts`' own, through
  :mod:`gateway.console.account_actions`.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import errors
from gateway.console import auth_pages, credits_pages, customer, jobs_pages, operator
from gateway.console.html import SECURITY_HEADERS, html_page
from gateway.console.session import (
    DEV_MODE,
    check_csrf,
    check_form_origin,
    set_nonce_cookie,
)
from gateway.console.views import LoginRequired, see_other

__all__ = ["CONSOLE_STATIC_DIR", "console_app", "setup_console"]

CONSOLE_STATIC_DIR = Path(__file__).resolve().parent / "static"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def _console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site posts; turn errors into pages; send the security headers."""
    response: web.StreamResponse
    try:
        if request.method not in _SAFE_METHODS:
            check_form_origin(request)
            check_csrf(request, await request.post())
        response = await handler(request)
    except LoginRequired as exc:
        response = see_other(exc.location)
    except errors.GatewayError as exc:
        response = html_page(
            "Sorry",
            '<p><a href="/console/">Back to the console</a></p>',
            status=exc.status,
            error=exc.message,
        )
        response.headers.update(exc.headers)
    except web.HTTPNotFound:
        response = html_page(
            "Not found",
            '<p><a href="/console/">Back to the console</a></p>',
            status=404,
            error="There is no such page.",
        )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "no-cache"
    set_nonce_cookie(request, response)
    return response


def console_app(*, dev: bool) -> web.Application:
    """The console, to be mounted at ``/console``."""
    app = web.Application(middlewares=[_console_middleware])
    app[DEV_MODE] = dev
    get, post = app.router.add_get, app.router.add_post
    get("/", auth_pages.home)
    get("/signup", auth_pages.signup_form)
    post("/signup", auth_pages.signup_submit)
    get("/login", auth_pages.login_form)
    post("/login", auth_pages.login_submit)
    post("/logout", auth_pages.logout)
    get("/password", auth_pages.password_form)
    post("/password", auth_pages.password_submit)
    get("/reset", auth_pages.reset_form)
    post("/reset", auth_pages.reset_submit)
    get("/keys", customer.keys_page)
    post("/keys", customer.create_key)
    post("/keys/{id}/rotate", customer.rotate_key)
    post("/keys/{id}/revoke", customer.revoke_key)
    get("/usage", customer.usage_page)
    get("/playground", customer.playground_page)
    get("/plan", customer.plan_page)
    get("/credits", credits_pages.credits_page)
    get("/jobs", jobs_pages.jobs_page)
    post("/jobs/{id}/cancel", jobs_pages.cancel_job)
    get("/admin/login", auth_pages.admin_login_form)
    post("/admin/login", auth_pages.admin_login_submit)
    get("/admin/users", operator.users_page)
    get("/admin/users/{id}", operator.user_page)
    post("/admin/users/{id}/{what:plan|state}", operator.change_user)
    post("/admin/users/{id}/credits", operator.grant_user_credits)
    post("/admin/keys/{id}/limits", operator.key_limits)
    post("/admin/keys/{id}/revoke", operator.operator_revoke_key)
    get("/admin/usage", operator.usage_overview)
    get("/admin/audit", operator.audit_page)
    app.router.add_static("/static", CONSOLE_STATIC_DIR)
    return app


async def _to_console(request: web.Request) -> web.Response:
    return see_other("/console/")


def setup_console(app: web.Application, *, dev: bool) -> None:
    """Mount the console on ``app`` at ``/console/`` (``/console`` redirects there)."""
    app.router.add_get("/console", _to_console)
    app.add_subapp("/console", console_app(dev=dev))
