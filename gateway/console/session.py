"""Console sessions and CSRF protection.

* The session is an access token (the account API's JWT, :class:`TokenIssuer`) in a
  cookie: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` outside development mode, path
  ``/console``, as long-lived as the token. An operator who logged in with the admin
  token holds a token whose subject is :data:`OPERATOR_SUBJECT` (not a user id, so the
  account API refuses it).
* CSRF: a random nonce in a second cookie; every form carries HMAC(server secret,
  nonce), which a page from another site can neither read nor compute. On top of that,
  a POST whose ``Sec-Fetch-Site`` is not ``same-origin`` (or ``none``: typed by the
  user) or whose ``Origin`` names another host is refused before any check of the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.console import account_actions
from gateway.db.pool import connection
from gateway.db.users import get_user
from gateway.services import SERVICES, Services

__all__ = [
    "CSRF_COOKIE",
    "DEV_MODE",
    "OPERATOR_SUBJECT",
    "SESSION_COOKIE",
    "CrossSiteRequest",
    "Session",
    "check_csrf",
    "check_form_origin",
    "clear_session",
    "csrf_nonce",
    "csrf_token",
    "load_session",
    "set_nonce_cookie",
    "start_session",
]

SESSION_COOKIE = "gw_console"
CSRF_COOKIE = "gw_console_csrf"
OPERATOR_SUBJECT = "console-operator:admin-token"
COOKIE_PATH = "/console"
#: True when the gateway runs with ``--dev``: cookies may then travel over plain HTTP.
DEV_MODE = web.AppKey("console_dev_mode", bool)
#: The request's CSRF nonce (from its cookie, or new: then the answer sets the cookie).
_NONCE = web.RequestKey("console_csrf_nonce", str)
_NEW_NONCE = web.RequestKey("console_new_csrf_nonce", bool)


class CrossSiteRequest(errors.GatewayError):
    status, code, type = 403, "cross_site_request", "permission_error"
    default_message = "This form was not sent from this console. Reload the page and retry."


@dataclass(frozen=True, slots=True)
class Session:
    """Who is using the console: a user (maybe also an operator), or the admin token."""

    token: str
    user: dict[str, Any] | None
    operator: bool

    @property
    def email(self) -> str | None:
        return self.user["email"] if self.user is not None else None


def _secret(services: Services) -> bytes:
    return hashlib.sha256(
        b"gateway-console-csrf:" + services.config.auth.jwt_secrets[0].encode()
    ).digest()


def csrf_nonce(request: web.Request) -> str:
    """This browser's CSRF nonce; a new one (set on the answer) when it has none."""
    if _NONCE not in request:
        nonce = request.cookies.get(CSRF_COOKIE, "")
        fresh = len(nonce) != 43 or not nonce.replace("-", "").replace("_", "").isalnum()
        request[_NONCE] = secrets.token_urlsafe(32) if fresh else nonce
        request[_NEW_NONCE] = fresh
    return request[_NONCE]


def csrf_token(request: web.Request) -> str:
    """What this browser's forms carry in their ``csrf`` field."""
    services = request.config_dict[SERVICES]
    nonce = csrf_nonce(request)
    return hmac.new(_secret(services), nonce.encode(), hashlib.sha256).hexdigest()


def check_form_origin(request: web.Request) -> None:
    """Refuse a state-changing request that a page of another origin sent."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise CrossSiteRequest()
    origin = request.headers.get("Origin")
    if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
        raise CrossSiteRequest()


def check_csrf(request: web.Request, form: Any) -> None:
    """Refuse a form without this browser's CSRF token."""
    given = form.get("csrf")
    if (
        not isinstance(given, str)
        or CSRF_COOKIE not in request.cookies
        or not hmac.compare_digest(given.encode(), csrf_token(request).encode())
    ):
        raise CrossSiteRequest()


def set_nonce_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Give the browser its CSRF nonce cookie, if this request made it a new one."""
    if request.get(_NEW_NONCE):
        response.set_cookie(CSRF_COOKIE, request[_NONCE], **_cookie_options(request))


def _cookie_options(request: web.Request, max_age: int | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "Strict",
        "secure": not request.config_dict[DEV_MODE],
    }
    if max_age is not None:
        options["max_age"] = max_age
    return options


def start_session(
    request: web.Request, response: web.StreamResponse, subject: str, generation: int = 0
) -> None:
    """Log a browser in as ``subject`` (a user id, or :data:`OPERATOR_SUBJECT`), with the
    user's token ``generation`` (a password change ends the sessions of earlier ones)."""
    tokens = request.config_dict[SERVICES].tokens
    response.set_cookie(
        SESSION_COOKIE,
        tokens.issue(subject, generation),
        **_cookie_options(request, tokens.ttl_seconds),
    )


async def clear_session(request: web.Request, response: web.StreamResponse) -> None:
    """Log a browser out: its token is revoked (where supported) and its cookie deleted."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await account_actions.revoke_session_token(request.config_dict[SERVICES], token)
    options = _cookie_options(request)
    response.del_cookie(
        SESSION_COOKIE,
        path=options["path"],
        secure=options["secure"],
        httponly=True,
        samesite="Strict",
    )


async def load_session(request: web.Request) -> Session | None:
    """The browser's session, or None (no cookie, a bad or expired token, a disabled user)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    services = request.config_dict[SERVICES]
    try:
        claims = services.tokens.claims(token)
    except errors.InvalidToken:
        return None
    subject = claims.user_id
    if await account_actions.session_token_revoked(services, token):
        return None
    if subject == OPERATOR_SUBJECT:
        return (
            Session(token=token, user=None, operator=True) if services.config.admin.token else None
        )
    try:
        user_id = uuid.UUID(subject)
    except ValueError:
        return None
    async with connection(services.pool) as conn:
        user = await get_user(conn, user_id)
    if user is None or not user["is_active"] or claims.generation != user["token_generation"]:
        return None
    operator = user["email"].lower() in services.config.admin.console_emails
    return Session(token=token, user=user, operator=operator)
