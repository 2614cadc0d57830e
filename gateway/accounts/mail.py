"""Sending mail (password-reset links) through the SMTP server of ``email.smtp_url``.

The standard library's client, in a thread: mail is rare, and nothing is added to the
gateway's dependencies for it.
"""

from __future__ import annotations

import asyncio
import email.message
import smtplib
import ssl
import urllib.parse

from gateway.config.email import EmailConfig

__all__ = ["MailError", "Mailer"]

_TIMEOUT_SECONDS = 10.0


class MailError(Exception):
    """The mail server could not be reached, or refused the message."""


class Mailer:
    def __init__(self, config: EmailConfig) -> None:
        """Raises ``ValueError`` if ``config.smtp_url`` is empty."""
        if not config.smtp_url:
            raise ValueError("email.smtp_url is not set")
        url = urllib.parse.urlsplit(config.smtp_url)
        self._scheme = url.scheme
        self._host = url.hostname or "localhost"
        self._port = url.port or (
            465 if url.scheme == "smtps" else 587 if "tls" in url.scheme else 25
        )
        self._user = urllib.parse.unquote(url.username) if url.username else None
        self._password = urllib.parse.unquote(url.password or "")
        self._sender = config.from_address

    async def send(self, to: str, subject: str, text: str) -> None:
        """Send a plain-text message; raises :class:`MailError` when it cannot be sent."""
        message = email.message.EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        try:
            await asyncio.to_thread(self._deliver, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(
                f"mail to the SMTP server {self._host}:{self._port} failed: {exc}"
            ) from exc

    def _deliver(self, message: email.message.EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self._scheme == "smtps":
            smtp = smtplib.SMTP_SSL(
                self._host, self._port, timeout=_TIMEOUT_SECONDS, context=context
            )
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=_TIMEOUT_SECONDS)
        with smtp:
            if self._scheme == "smtp+starttls":
                smtp.starttls(context=context)
            if self._user is not None:
                smtp.login(self._user, self._password)
            smtp.send_message(message)
