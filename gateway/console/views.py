"""What every console view uses: the session it requires, redirects, form values,
and the short notices a redirect may ask the next page to show."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import errors
from gateway.console.html import Nav
from gateway.console.session import Session, csrf_token, load_session

__all__ = [
    "LoginRequired",
    "OperatorsOnly",
    "form_int",
    "form_text",
    "nav_of",
    "notice_of",
    "require_session",
    "see_other",
]

#: Fixed texts a page shows for ``?done=...`` (never the query's own words).
_NOTICES = {
    "welcome": "Welcome! Create a key to call the API.",
    "logged-out": "You are logged out.",
    "password-set": "Your password was set. Log in with it.",
    "revoked": "The key was revoked: it no longer works.",
    "updated": "Saved.",
    "credits": "The credits were changed.",
    "canceled": "The job was canceled (a job that had ended already is unchanged).",
}


class LoginRequired(Exception):
    """No session (or not the kind the page needs): the browser goes to the log-in page."""

    def __init__(self, location: str = "/console/login") -> None:
        super().__init__(location)
        self.location = location


class OperatorsOnly(errors.GatewayError):
    status, code, type = 403, "operators_only", "permission_error"
    default_message = "This page is for operators."


def see_other(location: str) -> web.Response:
    """303: the browser GETs ``location`` (post, redirect, get)."""
    return web.Response(status=303, headers={"Location": location})


def form_text(form: Any, name: str) -> str:
    """A form field as text ('' when absent or a file)."""
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def form_int(form: Any, name: str, *, minimum: int = 0) -> int | None:
    """A whole number from a form field: None when empty; 400 naming the field otherwise."""
    text = form_text(form, name).strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < minimum or len(text) > 12:
        raise errors.InvalidRequest(
            f"'{name}' must be a whole number of at least {minimum}.", param=name
        )
    return int(text)


def notice_of(request: web.Request) -> str:
    return _NOTICES.get(request.query.get("done", ""), "")


async def require_session(
    request: web.Request, *, customer: bool = False, operator: bool = False
) -> Session:
    """The browser's session; without one, to the log-in page.

    ``customer``: the page is a user's (the admin token has none). ``operator``: the page
    is an operator's (:class:`OperatorsOnly` for a user who is not one).
    """
    session = await load_session(request)
    if session is None:
        raise LoginRequired("/console/admin/login" if operator else "/console/login")
    if customer and session.user is None:
        raise LoginRequired("/console/admin/users")
    if operator and not session.operator:
        raise OperatorsOnly()
    return session


def nav_of(request: web.Request, session: Session | None) -> Nav:
    if session is None:
        return Nav()
    return Nav(
        email=session.email,
        customer=session.user is not None,
        operator=session.operator,
        csrf=csrf_token(request),
    )
