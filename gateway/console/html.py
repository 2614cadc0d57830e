"""The console's HTML: escaping, the page layout, and the few form parts every page uses.

Pages are Python f-strings. Every value that comes from a user or the database goes
through :func:`esc`; markup built here is passed around as plain ``str``. No inline
script or style anywhere (the page's Content-Security-Policy forbids both): looks come
from ``static/console.css`` and behaviour from ``static/console.js``, by class and
``data-`` attribute.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

__all__ = [
    "CONSOLE_CSP",
    "SECURITY_HEADERS",
    "Nav",
    "esc",
    "field",
    "hidden_csrf",
    "html_page",
    "post_button",
    "when",
]

#: As strict as /docs: own script and style only, no inline code; forms post only here.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: Sent with every console answer: nothing is cached, framed or sniffed. The referrer
#: stays on this origin only: with "no-referrer" a browser's form posts say ``Origin:
#: null``, which the CSRF check refuses.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def esc(value: object) -> str:
    """Text (or an attribute value) for HTML: ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def when(value: dt.datetime | None) -> str:
    """A timestamp as the console shows it (UTC, to the minute), or a dash."""
    if value is None:
        return "—"
    return esc(value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))


def hidden_csrf(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">'


def field(
    label: str,
    name: str,
    *,
    kind: str = "text",
    value: str = "",
    required: bool = True,
    autocomplete: str = "off",
    extra: str = "",
) -> str:
    """A labelled input: the label is visible and names the control."""
    ident = f"f-{name}"
    need = " required" if required else ""
    return (
        f'<p class="field"><label for="{ident}">{esc(label)}</label>'
        f'<input id="{ident}" name="{esc(name)}" type="{esc(kind)}" value="{esc(value)}" '
        f'autocomplete="{esc(autocomplete)}"{need}{extra}></p>'
    )


def post_button(
    action: str, label: str, csrf: str, *, hidden: dict[str, str] | None = None, style: str = ""
) -> str:
    """A one-button form posting to ``action`` (the button's text is its name)."""
    fields = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (hidden or {}).items()
    )
    css = f' class="{esc(style)}"' if style else ""
    return (
        f'<form method="post" action="{esc(action)}" class="inline">{hidden_csrf(csrf)}{fields}'
        f'<button type="submit"{css}>{esc(label)}</button></form>'
    )


@dataclass(frozen=True, slots=True)
class Nav:
    """What the page header offers: who is logged in, and whether as an operator."""

    email: str | None = None
    customer: bool = False
    operator: bool = False
    csrf: str = ""


_CUSTOMER_LINKS = (
    ("/console/keys", "Keys"),
    ("/console/usage", "Usage"),
    ("/console/credits", "Credits"),
    ("/console/jobs", "Jobs"),
    ("/console/playground", "Playground"),
    ("/console/plan", "Plan"),
    ("/console/password", "Password"),
)
_OPERATOR_LINKS = (
    ("/console/admin/users", "Users"),
    ("/console/admin/usage", "All usage"),
    ("/console/admin/audit", "Audit log"),
)


def _links(links: Iterable[tuple[str, str]], current: str) -> str:
    items = []
    for href, text in links:
        mark = ' aria-current="page"' if href == current else ""
        items.append(f'<li><a href="{href}"{mark}>{esc(text)}</a></li>')
    return "".join(items)


def html_page(
    title: str,
    body: str,
    *,
    nav: Nav = Nav(),
    path: str = "",
    status: int = 200,
    notice: str = "",
    error: str = "",
) -> web.Response:
    """A whole console page; ``notice`` and ``error`` are plain text shown above ``body``."""
    links = ""
    if nav.customer:
        links += _links(_CUSTOMER_LINKS, path)
    if nav.operator:
        links += _links(_OPERATOR_LINKS, path)
    account = ""
    if nav.email is not None or nav.operator:
        who = esc(nav.email) if nav.email else "operator (admin token)"
        account = (
            f'<div class="account"><span class="who">{who}</span>'
            f"{post_button('/console/logout', 'Log out', nav.csrf)}</div>"
        )
    menu = f'<nav aria-label="Console"><ul class="menu">{links}</ul></nav>' if links else ""
    messages = ""
    if notice:
        messages += f'<p class="notice" role="status">{esc(notice)}</p>'
    if error:
        messages += f'<p class="error" role="alert">{esc(error)}</p>'
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · Image gateway console</title>"
        '<link rel="icon" href="data:,">'  # no favicon request (and no 404 for it)
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head><body>'
        '<header class="top"><a class="brand" href="/console/">Image gateway</a>'
        f"{account}{menu}</header>"
        f'<main id="main"><h1>{esc(title)}</h1>{messages}{body}</main></body></html>\n'
    )
    return web.Response(
        text=document,
        content_type="text/html",
        charset="utf-8",
        status=status,
        headers=SECURITY_HEADERS,
    )
