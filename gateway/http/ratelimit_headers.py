"""Rate-limit response headers, from one admission decision.

Two policies: ``"requests"`` (per rolling 60 s) and ``"images"`` (per UTC day), in
the fields of draft-ietf-httpapi-ratelimit-headers-10 (``RateLimit-Policy`` and
``RateLimit``, Structured Field lists) and OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math

from gateway.limits.admission import Decision

__all__ = ["openai_duration", "rate_limit_headers"]


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: ``"1s"``, ``"6m0s"``, ``"3h2m1s"``."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(decision: Decision, images_used: int | None = None) -> dict[str, str]:
    used = decision.images_used if images_used is None else images_used
    images_remaining = max(0, decision.images_limit - used)
    requests_reset = math.ceil(decision.requests_reset)
    return {
        "RateLimit-Policy": (
            f'"requests";q={decision.requests_limit};w=60, '
            f'"images";q={decision.images_limit};w=86400'
        ),
        "RateLimit": (
            f'"requests";r={decision.requests_remaining};t={requests_reset}, '
            f'"images";r={images_remaining};t={decision.images_reset}'
        ),
        "x-ratelimit-limit-requests": str(decision.requests_limit),
        "x-ratelimit-remaining-requests": str(decision.requests_remaining),
        "x-ratelimit-reset-requests": openai_duration(decision.requests_reset),
        "x-ratelimit-limit-images": str(decision.images_limit),
        "x-ratelimit-remaining-images": str(images_remaining),
        "x-ratelimit-reset-images": openai_duration(decision.images_reset),
    }
