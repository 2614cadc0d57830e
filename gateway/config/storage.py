"""The ``storage:`` section: where output images are kept and how links to them work.

Secrets never sit in the config: an option ending in ``_env`` names the environment
variable that holds its value (``secret_access_key_env: S3_SECRET``); whether those
variables are set is checked at start-up (:func:`gateway.startup.prepare`).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated, Any

from msgspec import Meta
from msgspec.structs import force_setattr

from gateway.config.errors import ConfigError
from gateway.config.section import Section, doc, says

__all__ = ["ENV_SUFFIX", "MIN_SECRET_BYTES", "SCHEMES", "StorageConfig"]

#: URL schemes a store can have (obstore's names for Azure included).
SCHEMES = ("file", "memory", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl")
#: Signing secrets, like ``auth.jwt_secrets``, are at least this long.
MIN_SECRET_BYTES = 32
ENV_SUFFIX = "_env"
_SECRET_WORDS = ("secret", "password", "token", "account_key", "sas_key", "service_account_key")


class StorageConfig(Section, frozen=True, kw_only=True):
    """Where output images are kept (``response_format: "url"``) and how links work."""

    url: Annotated[
        str,
        doc(
            "file://<dir> (default file://${GATEWAY_DATA_DIR:-./.data}/images; a relative "
            "path is from the working directory), s3://bucket/prefix, gs://bucket/prefix, "
            "az://account/container/prefix or memory://."
        ),
    ] = "file://./.data/images"
    options: Annotated[
        Mapping[str, Any],
        doc(
            "Passed to the store (endpoint, region, ...); `<name>_env: VAR` reads <name> "
            "from the environment variable VAR (secrets only that way); client_options: "
            "HTTP client settings (timeout, allow_http)."
        ),
    ] = types.MappingProxyType({})
    url_ttl_seconds: Annotated[
        int, Meta(gt=0), doc("Seconds a link works (at most the retention).")
    ] = 3600
    retention_hours: Annotated[
        float,
        Meta(ge=0, extra=says("must be a number >= 0 (0: never swept)", always=True)),
        doc("Stored images are deleted after this many hours; 0: never by the gateway."),
    ] = 24.0
    public_base_url: Annotated[
        str,
        doc(
            "How clients reach the gateway (https://img.example.com); empty: each "
            "request's own scheme and host (X-Forwarded-* from trusted proxies)."
        ),
    ] = ""
    signing_secrets: Annotated[
        tuple[str, ...],
        doc(
            "HMAC secrets for links (32+ bytes each): the first signs, all verify. Empty "
            "entries (an unset ${VAR:-}) are dropped. Required outside --dev."
        ),
    ] = ()
    presign: Annotated[bool, doc("S3 only: links are the store's own presigned GET URLs.")] = False

    def __post_init__(self) -> None:
        _check(self)

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower()


def _check(config: StorageConfig) -> None:
    """The rules across a ``storage:`` section's keys (run when it is decoded); keys in
    the errors are relative to the section. Empty signing secrets (an unset ``${VAR:-}``)
    are dropped and ``public_base_url`` loses its trailing slash."""
    url = config.url
    if "://" not in url:
        raise ConfigError("url: must be a URL such as file://./.data/images or s3://bucket")
    scheme = config.scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"url: unsupported scheme {scheme!r}; use file, s3, gs, az or memory")
    if scheme == "file" and not url.split("://", 1)[1]:
        raise ConfigError("url: a file:// URL needs a directory")
    for key, value in config.options.items():
        _check_option(str(key), value)
    if scheme in ("file", "memory") and config.options:
        raise ConfigError(f"options: a {scheme}:// store takes no options")
    force_setattr(config, "options", types.MappingProxyType(dict(config.options)))
    retention = config.retention_hours
    if retention and config.url_ttl_seconds > retention * 3600:
        raise ConfigError(
            "url_ttl_seconds: must not be longer than storage.retention_hours "
            "(a link would outlive its image)"
        )
    base = config.public_base_url.rstrip("/")
    if base and not (base.startswith(("http://", "https://")) and "?" not in base):
        raise ConfigError("public_base_url: must be an http:// or https:// URL")
    force_setattr(config, "public_base_url", base)
    for i, secret in enumerate(config.signing_secrets):
        if secret and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"signing_secrets[{i}]: must be at least {MIN_SECRET_BYTES} bytes")
    force_setattr(config, "signing_secrets", tuple(s for s in config.signing_secrets if s))
    if config.presign and scheme not in ("s3", "s3a"):
        raise ConfigError("presign: only an s3:// store can presign links")


def _check_option(key: str, value: Any) -> None:
    path = f"options.{key}"
    if key == "client_options":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: must be a mapping")
        for name, setting in value.items():
            if not isinstance(setting, str | bool | int | float):
                raise ConfigError(f"{path}.{name}: must be a string, number or boolean")
        return
    if key.endswith(ENV_SUFFIX):
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
