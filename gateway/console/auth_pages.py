"""Console pages for getting in and out: sign up, log in, log out, password, reset,
and the operator's log-in with the admin token.

Sign-up and log-in run the account API's own functions (:mod:`gateway.accounts.login`),
so the same throttles apply: per client IP, and per account after failed logins.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway import errors
from gateway.accounts.login import authenticate, sign_up, throttle_ip
from gateway.console import account_actions
from gateway.console.html import Nav, esc, field, hidden_csrf, html_page
from gateway.console.session import (
    OPERATOR_SUBJECT,
    clear_session,
    csrf_token,
    load_session,
    start_session,
)
from gateway.console.views import form_text, nav_of, notice_of, require_session, see_other
from gateway.http.schemas.accounts import MAX_PASSWORD, MIN_PASSWORD
from gateway.http.validate import normal_email
from gateway.services import SERVICES

__all__ = [
    "admin_login_form",
    "admin_login_submit",
    "home",
    "login_form",
    "login_submit",
    "logout",
    "password_form",
    "password_submit",
    "reset_form",
    "reset_submit",
    "signup_form",
    "signup_submit",
]

_PASSWORD_RULE = f"{MIN_PASSWORD} to {MAX_PASSWORD} characters."


async def home(request: web.Request) -> web.StreamResponse:
    """``/console/``: the keys of a logged-in user, the users for an operator, else log in."""
    session = await load_session(request)
    if session is None:
        return see_other("/console/login")
    return see_other("/console/keys" if session.user is not None else "/console/admin/users")


def _credentials_page(
    request: web.Request, *, signup: bool, email: str = "", error: str = "", status: int = 200
) -> web.Response:
    title, action, button = (
        ("Sign up", "/console/signup", "Sign up")
        if signup
        else ("Log in", "/console/login", "Log in")
    )
    other = (
        '<p>Have an account? <a href="/console/login">Log in instead</a>.</p>'
        if signup
        else '<p>New here? <a href="/console/signup">Create an account</a>.</p>'
    )
    secret_kind = "new-password" if signup else "current-password"
    hint = f'<p class="hint">Passwords: {_PASSWORD_RULE}</p>' if signup else ""
    body = (
        f'<form method="post" action="{action}" class="card">{hidden_csrf(csrf_token(request))}'
        f"{field('Email', 'email', kind='email', value=email, autocomplete='username')}"
        f"{field('Password', 'password', kind='password', autocomplete=secret_kind)}"
        f'{hint}<button type="submit">{button}</button></form>{other}'
    )
    return html_page(title, body, status=status, error=error, notice=notice_of(request))


async def signup_form(request: web.Request) -> web.Response:
    return _credentials_page(request, signup=True)


async def signup_submit(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    form = await request.post()
    email, password = form_text(form, "email"), form_text(form, "password")
    try:
        await throttle_ip(services, "register", services.client_ip.of(request))
        email = normal_email(email, "Enter a valid email address.")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise errors.InvalidRequest(f"The password must be {_PASSWORD_RULE}")
        user = await sign_up(services, email, password)
    except errors.EmailTaken:
        return _credentials_page(
            request,
            signup=True,
            email=email,
            status=409,
            error="An account with this email exists. Log in instead.",
        )
    except errors.GatewayError as exc:
        return _credentials_page(
            request, signup=True, email=email, error=exc.message, status=exc.status
        )
    response = see_other("/console/keys?done=welcome")
    start_session(request, response, str(user["id"]))
    return response


async def login_form(request: web.Request) -> web.Response:
    return _credentials_page(request, signup=False)


async def login_submit(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    form = await request.post()
    email = form_text(form, "email")
    try:
        await throttle_ip(services, "login", services.client_ip.of(request))
        user_id, generation = await authenticate(services, email, form_text(form, "password"))
    except errors.InvalidCredentials:
        return _credentials_page(
            request,
            signup=False,
            email=email,
            status=401,
            error="The email or the password is not right.",
        )
    except errors.GatewayError as exc:
        response = _credentials_page(
            request, signup=False, email=email, error=exc.message, status=exc.status
        )
        response.headers.update(exc.headers or {})
        return response
    response = see_other("/console/keys")
    start_session(request, response, user_id, generation)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = see_other("/console/login?done=logged-out")
    await clear_session(request, response)
    return response


def _password_page(
    request: web.Request, nav: Nav, *, error: str = "", notice: str = "", status: int = 200
) -> web.Response:
    body = (
        f'<form method="post" action="/console/password" class="card">'
        f"{hidden_csrf(csrf_token(request))}"
        f"{field('Current password', 'current', kind='password', autocomplete='current-password')}"
        f"{field('New password', 'new', kind='password', autocomplete='new-password')}"
        f'<p class="hint">{_PASSWORD_RULE}</p>'
        '<button type="submit">Change password</button></form>'
    )
    return html_page(
        "Change password",
        body,
        nav=nav,
        path="/console/password",
        error=error,
        notice=notice,
        status=status,
    )


async def password_form(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, customer=True)
    return _password_page(request, nav_of(request, session))


async def password_submit(request: web.Request) -> web.StreamResponse:
    session = await require_session(request, customer=True)
    assert session.user is not None
    nav = nav_of(request, session)
    form = await request.post()
    new = form_text(form, "new")
    if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
        return _password_page(
            request, nav, status=400, error=f"The new password must be {_PASSWORD_RULE}"
        )
    try:
        generation = await account_actions.change_password(
            request.config_dict[SERVICES], session.user, form_text(form, "current"), new
        )
    except errors.GatewayError as exc:
        return _password_page(request, nav, error=exc.message, status=exc.status)
    # Every earlier session ended with the change; this browser gets a new one.
    response = _password_page(request, nav, notice="Your password was changed.")
    start_session(request, response, str(session.user["id"]), generation)
    return response


def _reset_page(
    request: web.Request, token: str, *, error: str = "", status: int = 200
) -> web.Response:
    body = (
        f'<form method="post" action="/console/reset" class="card">'
        f"{hidden_csrf(csrf_token(request))}"
        f'<input type="hidden" name="token" value="{esc(token)}">'
        f"{field('New password', 'new', kind='password', autocomplete='new-password')}"
        f'<p class="hint">{_PASSWORD_RULE}</p>'
        '<button type="submit">Set password</button></form>'
    )
    return html_page("Choose a new password", body, error=error, status=status)


async def reset_form(request: web.Request) -> web.Response:
    return _reset_page(request, request.query.get("token", ""))


async def reset_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token, new = form_text(form, "token"), form_text(form, "new")
    if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
        return _reset_page(
            request, token, status=400, error=f"The new password must be {_PASSWORD_RULE}"
        )
    try:
        await account_actions.redeem_reset_token(request.config_dict[SERVICES], token, new)
    except errors.GatewayError as exc:
        return _reset_page(request, token, error=exc.message, status=exc.status)
    return see_other("/console/login?done=password-set")


def _admin_login_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    body = (
        '<form method="post" action="/console/admin/login" class="card">'
        f"{hidden_csrf(csrf_token(request))}"
        f"{field('Admin token', 'token', kind='password', autocomplete='off')}"
        '<button type="submit">Open operator pages</button></form>'
    )
    return html_page("Operator log-in", body, error=error, status=status)


async def admin_login_form(request: web.Request) -> web.StreamResponse:
    if not request.config_dict[SERVICES].config.admin.token:
        raise errors.NotFound()
    return _admin_login_page(request)


async def admin_login_submit(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    expected = services.config.admin.token
    if not expected:
        raise errors.NotFound()
    form = await request.post()
    try:
        await throttle_ip(services, "login", services.client_ip.of(request))
    except errors.GatewayError as exc:
        return _admin_login_page(request, error=exc.message, status=exc.status)
    if not hmac.compare_digest(form_text(form, "token").encode(), expected.encode()):
        return _admin_login_page(request, error="The admin token is not right.", status=401)
    response = see_other("/console/admin/users")
    start_session(request, response, OPERATOR_SUBJECT)
    return response
