"""The ``storage:`` section: where output images are kept and how links to them work.

:func:`parse_storage_config` validates the operator's (already interpolated) mapping into
a frozen :class:`StorageConfig`; every error is a :class:`~gateway.config.ConfigError`
naming the dotted key (``storage.url_ttl_seconds: must be > 0``). Secrets never sit in
the config: an option ending in ``_env`` names the environment variable that holds its
value (``secret_access_key_env: S3_SECRET`` reads ``S3_SECRET`` into
``secret_access_key``), read by :func:`store_options` when the store is opened.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import types
from collections.abc import Mapping
from typing import Any

from gateway.config import ConfigError

__all__ = [
    "DEFAULT_URL",
    "MIN_SECRET_BYTES",
    "SCHEMES",
    "StorageConfig",
    "parse_storage_config",
    "signing_secrets",
    "store_options",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "file://./.data/images"
#: URL schemes a store can have (obstore's names for Azure included).
SCHEMES = ("file", "memory", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl")
#: Signing secrets, like ``auth.jwt_secrets``, are at least this long.
MIN_SECRET_BYTES = 32
_ENV_SUFFIX = "_env"
_SECRET_WORDS = ("secret", "password", "token", "account_key", "sas_key", "service_account_key")


@dataclasses.dataclass(frozen=True, slots=True)
class StorageConfig:
    #: ``file://<dir>`` (default ``file://${GATEWAY_DATA_DIR:-./.data}/images``; a
    #: relative path is from the working directory), ``s3://bucket/prefix``,
    #: ``gs://bucket/prefix``, ``az://account/container/prefix`` or ``memory://``.
    url: str = DEFAULT_URL
    #: Passed to the store (``endpoint``, ``region``, ...); ``<name>_env: VAR`` reads the
    #: value of ``<name>`` from the environment variable ``VAR``; ``client_options`` is a
    #: mapping of HTTP client settings (``timeout: "30s"``, ``allow_http: true``).
    options: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    #: Seconds a link works.
    url_ttl_seconds: int = 3600
    #: Stored images are deleted this many hours after they were written; 0: never by the
    #: gateway (a bucket lifecycle rule does it).
    retention_hours: float = 24.0
    #: How clients reach the gateway (``https://img.example.com``); empty: each request's
    #: own scheme and host (``X-Forwarded-Proto``/``-Host`` from trusted proxies).
    public_base_url: str = ""
    #: HMAC secrets for links: the first signs, all verify (rotation).
    signing_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    #: S3 only: links are the store's own presigned GET URLs instead of the gateway's.
    presign: bool = False

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower()


def parse_storage_config(raw: Any, environ: Mapping[str, str]) -> StorageConfig:
    """Validate the ``storage:`` mapping (``None``: all defaults).

    Raises:
        ConfigError: an unknown key, a value of the wrong type or range, or an ``*_env``
            option naming a variable that is not set; the message names the key.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("storage: must be a mapping")
    fields = {f.name for f in dataclasses.fields(StorageConfig)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"storage.{key}: unknown key")
    defaults = StorageConfig()

    url = raw.get("url", _default_url(environ))
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("storage.url: must be a URL such as file://./.data/images or s3://bucket")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"storage.url: unsupported scheme {scheme!r}; use file, s3, gs, az or memory"
        )
    if scheme == "file" and not url.split("://", 1)[1]:
        raise ConfigError("storage.url: a file:// URL needs a directory")

    options = raw.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError("storage.options: must be a mapping")
    for key, value in options.items():
        _check_option(str(key), value)
    if scheme in ("file", "memory") and options:
        raise ConfigError(f"storage.options: a {scheme}:// store takes no options")
    store_options(options, environ)  # every *_env variable is set

    ttl = _whole(raw, "url_ttl_seconds", defaults.url_ttl_seconds)
    if ttl <= 0:
        raise ConfigError("storage.url_ttl_seconds: must be > 0")
    retention = raw.get("retention_hours", defaults.retention_hours)
    if isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0:
        raise ConfigError("storage.retention_hours: must be a number >= 0 (0: never swept)")
    if retention and ttl > retention * 3600:
        raise ConfigError(
            "storage.url_ttl_seconds: must not be longer than storage.retention_hours "
            "(a link would outlive its image)"
        )

    base = raw.get("public_base_url", defaults.public_base_url)
    if not isinstance(base, str):
        raise ConfigError("storage.public_base_url: must be a string")
    base = base.rstrip("/")
    if base and not (base.startswith(("http://", "https://")) and "?" not in base):
        raise ConfigError("storage.public_base_url: must be an http:// or https:// URL")

    raw_secrets = raw.get("signing_secrets", [])
    if raw_secrets is None:
        raw_secrets = []
    if not isinstance(raw_secrets, list):
        raise ConfigError("storage.signing_secrets: must be a list")
    kept = []
    for i, secret in enumerate(raw_secrets):
        if not isinstance(secret, str):
            raise ConfigError(f"storage.signing_secrets[{i}]: must be a string")
        if not secret:  # an unset "${VAR:-}"
            continue
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"storage.signing_secrets[{i}]: must be at least {MIN_SECRET_BYTES} bytes"
            )
        kept.append(secret)

    presign = raw.get("presign", defaults.presign)
    if not isinstance(presign, bool):
        raise ConfigError("storage.presign: must be true or false")
    if presign and scheme not in ("s3", "s3a"):
        raise ConfigError("storage.presign: only an s3:// store can presign links")

    return StorageConfig(
        url=url,
        options=types.MappingProxyType(dict(options)),
        url_ttl_seconds=ttl,
        retention_hours=float(retention),
        public_base_url=base,
        signing_secrets=tuple(kept),
        presign=presign,
    )


def store_options(options: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``options`` with every ``<name>_env: VAR`` replaced by ``<name>: $VAR``.

    Raises:
        ConfigError: a named variable is not set (the message names the key, never a value).
    """
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        if key.endswith(_ENV_SUFFIX) and key != _ENV_SUFFIX:
            found = environ.get(value)
            if not found:
                raise ConfigError(f"storage.options.{key}: environment variable {value} is not set")
            resolved[key[: -len(_ENV_SUFFIX)]] = found
        else:
            resolved[key] = dict(value) if isinstance(value, Mapping) else value
    return resolved


def signing_secrets(config: StorageConfig, *, dev: bool) -> tuple[bytes, ...]:
    """The link secrets as bytes; in development mode, a generated one if none is set.

    Raises:
        ConfigError: no secret outside development mode.
    """
    if config.signing_secrets:
        return tuple(s.encode() for s in config.signing_secrets)
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


def _check_option(key: str, value: Any) -> None:
    path = f"storage.options.{key}"
    if key == "client_options":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: must be a mapping")
        for name, setting in value.items():
            if not isinstance(setting, str | bool | int | float):
                raise ConfigError(f"{path}.{name}: must be a string, number or boolean")
        return
    if key.endswith(_ENV_SUFFIX):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: must name an environment variable")
        return
    if _is_secret(key):
        raise ConfigError(f"{path}: secrets come from the environment: use {key}_env: VAR")
    if not isinstance(value, str | bool | int | float):
        raise ConfigError(f"{path}: must be a string, number or boolean")


def _is_secret(key: str) -> bool:
    """An option that holds a credential itself (not a file or a URL that leads to one)."""
    if key.endswith(("_file", "_path", "_uri", "_url", "_endpoint", "_id")):
        return False
    return key == "access_key" or any(word in key for word in _SECRET_WORDS)


def _default_url(environ: Mapping[str, str]) -> str:
    return f"file://{environ.get('GATEWAY_DATA_DIR') or './.data'}/images"


def _whole(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"storage.{key}: must be a whole number")
    return value
