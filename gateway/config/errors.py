"""The one error a bad configuration raises."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key by its dotted path
    (``plans.free.images_per_dya: unknown key``).

    A struct's ``__post_init__`` raises it with a key relative to the struct
    (``pool_max_size: ...``); decoding prefixes the struct's own path.
    """
