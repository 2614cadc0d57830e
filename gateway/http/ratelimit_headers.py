"""Rate-limit response headers, from one admission decision.

Two policies: ``"requests"`` (per rolling 60 s) and ``"images"`` (per UTC day), in
the fields of draft-ietf-httpapi-ratelimit-headers-10 (``RateLimit-Policy`` and
``RateLimit``, Structured Field lists) and OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import functools
import math

from gateway.limits.decision import Decision

__all__ = ["RATE_LIMIT_HEADERS", "openai_duration", "rate_limit_headers"]

#: The headers :func:`rate_limit_headers` makes.
RATE_LIMIT_HEADERS = (
    "RateLimit-Policy",
    "RateLimit",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-images",
    "x-ratelimit-remaining-images",
    "x-ratelimit-reset-images",
)


@functools.lru_cache(maxsize=4096)
def _duration(total: int) -> str:
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: ``"1s"``, ``"6m0s"``, ``"3h2m1s"``."""
    return _duration(max(0, math.ceil(seconds)))


@functools.lru_cache(maxsize=256)
def _policy(requests_limit: int, images_limit: int) -> tuple[str, str, str]:
    """The headers that depend only on the plan's limits (a few plans: computed once)."""
    return (
        f'"requests";q={requests_limit};w=60, "images";q={images_limit};w=86400',
        str(requests_limit),
        str(images_limit),
    )


def rate_limit_headers(decision: Decision, images_used: int | None = None) -> dict[str, str]:
    used = decision.images_used if images_used is None else images_used
    images_remaining = max(0, decision.images_limit - used)
    requests_reset = max(0, math.ceil(decision.requests_reset))
    requests_remaining = decision.requests_remaining
    policy, requests_limit, images_limit = _policy(decision.requests_limit, decision.images_limit)
    return {
        "RateLimit-Policy": policy,
        "RateLimit": (
            f'"requests";r={requests_remaining};t={requests_reset}, '
            f'"images";r={images_remaining};t={decision.images_reset}'
        ),
        "x-ratelimit-limit-requests": requests_limit,
        "x-ratelimit-remaining-requests": str(requests_remaining),
        "x-ratelimit-reset-requests": _duration(requests_reset),
        "x-ratelimit-limit-images": images_limit,
        "x-ratelimit-remaining-images": str(images_remaining),
        "x-ratelimit-reset-images": _duration(max(0, decision.images_reset)),
    }
