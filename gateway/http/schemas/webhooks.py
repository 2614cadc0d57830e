"""``POST /v1/webhooks/secret``: the secret webhooks are signed with."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["WebhookSecret"]


class WebhookSecret(msgspec.Struct):
    secret: Annotated[
        str,
        Meta(
            description="`whsec_` and the base64 of 32 bytes: shown this once. Verify each"
            " webhook's `webhook-signature` with it (Standard Webhooks)."
        ),
    ]
    previous_secret_expires_at: Annotated[
        int | None,
        Meta(
            description="Until when (unix seconds) webhooks are also signed with the secret"
            " this one replaces, so receivers can switch without missing one; null if there"
            " was none (or `webhooks.rotation_grace_hours` is 0)."
        ),
    ] = None
