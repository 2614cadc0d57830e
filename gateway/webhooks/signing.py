"""Webhook secrets and signatures (Standard Webhooks).

A user's secret is ``HMAC-SHA256(server key, "webhook-secret:<user id>:<nonce>")``;
only the nonce is stored, so a copy of the database alone cannot sign a webhook. The
server key is ``webhooks.secret_key``, or derived from the first account-token secret.
A new secret (``POST /v1/webhooks/secret``) is a new nonce. The previous nonce is kept
for ``webhooks.rotation_grace_hours``: meanwhile every webhook carries two signatures,
space-separated (``v1,<new> v1,<old>``, as the spec allows), so a receiver still holding
the old secret verifies until it switches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

__all__ = ["SECRET_PREFIX", "SecretDeriver", "new_nonce", "sign", "signature_header"]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, no secret


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


class SecretDeriver:
    def __init__(self, server_key: str) -> None:
        self._key = hashlib.sha256(b"gateway webhooks\x00" + server_key.encode()).digest()

    def secret(self, user_id: str, nonce: str) -> bytes:
        """The user's signing key (32 bytes)."""
        message = f"webhook-secret:{user_id}:{nonce}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def shown(self, user_id: str, nonce: str) -> str:
        """The secret as the user gets it: ``whsec_<base64>``."""
        return SECRET_PREFIX + base64.b64encode(self.secret(user_id, nonce)).decode()


def sign(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header signed with each of ``secrets``, space-separated
    (the current secret first)."""
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets)
