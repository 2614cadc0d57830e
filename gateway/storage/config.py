"""What the store needs of its ``storage:`` section (:mod:`gateway.config.storage`) at
run time: the options with their ``*_env`` variables read (:func:`store_options`), the
link secrets (:func:`signing_secrets`), and the section validated on its own
(:func:`parse_storage_config`, as the whole config's decoding does).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.config.decode import decode
from gateway.config.errors import ConfigError
from gateway.config.load import default_storage_url as default_url
from gateway.config.section import Section
from gateway.config.storage import ENV_SUFFIX, MIN_SECRET_BYTES, SCHEMES, StorageConfig

__all__ = [
    "DEFAULT_URL",
    "MIN_SECRET_BYTES",
    "SCHEMES",
    "StorageConfig",
    "default_url",
    "parse_storage_config",
    "signing_secrets",
    "store_options",
]

log = logging.getLogger(__name__)

#: What link keys derived from the account-token secrets are labelled with.
_DERIVATION_LABEL = b"image-gateway file links v1"

DEFAULT_URL = "file://./.data/images"


def parse_storage_config(raw: Any, environ: Mapping[str, str]) -> StorageConfig:
    """Validate a ``storage:`` mapping on its own (``None``: all defaults), as the whole
    config's decoding does, and check that its ``*_env`` variables are set.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or range, or an ``*_env``
            option naming a variable that is not set; the message names the key.
    """
    if raw is None:
        raw = {}
    if isinstance(raw, Mapping) and "url" not in raw:
        raw = {**raw, "url": default_url(environ)}
    config = decode({"storage": raw}, _Storage).storage
    store_options(config.options, environ)  # every *_env variable is set
    return config


class _Storage(Section, frozen=True, kw_only=True):
    storage: StorageConfig = StorageConfig()


def store_options(options: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``options`` with every ``<name>_env: VAR`` replaced by ``<name>: $VAR``.

    Raises:
        ConfigError: a named variable is not set (the message names the key, never a value).
    """
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        if key.endswith(ENV_SUFFIX) and key != ENV_SUFFIX:
            found = environ.get(value)
            if not found:
                raise ConfigError(f"storage.options.{key}: environment variable {value} is not set")
            resolved[key[: -len(ENV_SUFFIX)]] = found
        else:
            resolved[key] = dict(value) if isinstance(value, Mapping) else value
    return resolved


def signing_secrets(
    config: StorageConfig, *, dev: bool, derive_from: Sequence[str] = ()
) -> tuple[bytes, ...]:
    """The link secrets as bytes.

    ``storage.signing_secrets`` when set; else keys derived from ``derive_from`` (the
    account-token secrets: one HMAC each, under a label of their own, so a link's
    signature says nothing about a token's key, and rotating those secrets rotates the
    links'); else, in development mode only, a generated one.

    Raises:
        ConfigError: no secret at all outside development mode.
    """
    if config.signing_secrets:
        return tuple(s.encode() for s in config.signing_secrets)
    if derive_from:
        return tuple(
            hmac.new(secret.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()
            for secret in derive_from
        )
    if not dev:
        raise ConfigError(
            f"storage.signing_secrets: a secret of at least {MIN_SECRET_BYTES} bytes is "
            "required to sign file links, or run in development mode (serve --dev)"
        )
    log.warning(
        "development mode: signing file links with a generated secret; "
        "links will not survive a restart or work across worker processes"
    )
    return (secrets.token_bytes(MIN_SECRET_BYTES),)
