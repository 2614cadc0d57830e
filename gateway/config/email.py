"""The ``email:`` section: where password-reset links are sent from, if anywhere."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from gateway.config.section import Section, doc, says

__all__ = ["EmailConfig"]


class EmailConfig(Section, frozen=True, kw_only=True):
    smtp_url: Annotated[
        str,
        Meta(
            pattern=r"\A((smtp|smtps|smtp\+starttls)://[^/?#\s]+/?)?\Z",
            extra=says("must be an smtp://, smtp+starttls:// or smtps:// URL (or empty: off)"),
        ),
        doc(
            "The mail server that sends password-reset links: smtp://[user:password@]host"
            "[:port] (no TLS: a local relay), smtp+starttls:// or smtps:// (TLS). Empty: no "
            "mail; `gateway users reset-password` and the admin API hand the link over."
        ),
    ] = ""
    from_address: Annotated[
        str,
        Meta(pattern=r"\A[^@\s]+@[^@\s]+\Z", extra=says("must be an email address")),
        doc("The sender of the gateway's mail."),
    ] = "gateway@localhost"
    public_url: Annotated[
        str,
        Meta(
            pattern=r"\A(https?://[^\s?#]+)?\Z",
            extra=says("must be an http(s):// URL (or empty)"),
        ),
        doc(
            "The gateway's address as its users reach it, to make whole links "
            "(https://gateway.example.com/console/reset?token=...); empty: links are paths."
        ),
    ] = ""
