"""What start-up can check before it connects to anything: ``serve`` and ``check-config``
both run :func:`prepare`, so a config that ``check-config`` passes starts.

Loading the config (:func:`gateway.config.load_config`) checks every key on its own and
the references between them (plans, models, backends). :func:`prepare` adds what needs
the code and the environment: each backend built by its type (its options checked) and
its credentials' variables set, and a JWT secret present (outside development mode).

Outside development mode it also looks for the demo secrets this repository ships, all
marked ``INSECURE-`` (docker-compose.yml's defaults): anyone who read the repository
knows them. Such an ``admin.token`` is refused (it opens the admin API to everyone);
any other such secret is named in a warning, logged once at start-up.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from msgspec.structs import replace

from gateway.backends.registry import BackendRegistry, Router, default_registry
from gateway.config import Config, ConfigError
from gateway.storage.config import store_options

__all__ = [
    "DEV_MODE_WARNING",
    "INSECURE_MARK",
    "Prepared",
    "StartupError",
    "insecure_secrets",
    "prepare",
]

#: Logged when development mode made up the JWT secret.
DEV_MODE_WARNING = (
    "development mode: signing access tokens with a generated secret; "
    "tokens will not survive a restart"
)

#: How every documented insecure default secret begins (docker-compose.yml's demo values).
INSECURE_MARK = "INSECURE-"


class StartupError(Exception):
    """Start-up failed for a reason outside the config (the port is taken, Postgres is
    unreachable); the message is the one line an operator reads."""


@dataclass(frozen=True, slots=True)
class Prepared:
    #: The config to run: in development mode without a JWT secret, with a generated one.
    config: Config
    #: The backends, built and checked, by model.
    router: Router
    #: True when development mode made up the JWT secret: tokens will not survive a restart.
    generated_jwt_secret: bool = False
    #: One line per secret that is a documented insecure default (to log at start-up).
    warnings: tuple[str, ...] = ()


def insecure_secrets(config: Config) -> list[str]:
    """The keys of ``config`` whose secret is a documented insecure default."""
    named = [
        *(f"auth.jwt_secrets[{i}]" for i, s in enumerate(config.auth.jwt_secrets) if _insecure(s)),
        *(["admin.token"] if _insecure(config.admin.token) else []),
        *(["webhooks.secret_key"] if _insecure(config.webhooks.secret_key) else []),
        *(
            f"storage.signing_secrets[{i}]"
            for i, s in enumerate(config.storage.signing_secrets)
            if _insecure(s)
        ),
    ]
    return named


def _insecure(secret: str) -> bool:
    return secret.startswith(INSECURE_MARK)


def _check_secrets(config: Config) -> tuple[str, ...]:
    """Warnings for the insecure default secrets of ``config``.

    Raises :class:`ConfigError` when ``admin.token`` is one.
    """
    named = insecure_secrets(config)
    if "admin.token" in named:
        raise ConfigError(
            f"admin.token: is a documented insecure default ({INSECURE_MARK}...), which would "
            "open the admin API to anyone; set GATEWAY_ADMIN_TOKEN to a secret of your own "
            "(openssl rand -base64 32), or to an empty value to turn the admin API off"
        )
    return tuple(
        f"{key} is a documented insecure default ({INSECURE_MARK}...): anyone can forge "
        "what it signs; set a secret of your own (openssl rand -base64 48)"
        for key in named
    )


def prepare(
    config: Config,
    *,
    dev: bool = False,
    registry: BackendRegistry | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Prepared:
    """Check what ``config`` needs from the code and the environment; no I/O.

    Raises :class:`ConfigError` naming the key: a backend type that is not registered, a
    backend option its type refuses, a credential variable that is not set, no JWT
    secret (unless ``dev``, which generates one), an insecure default ``admin.token``
    (unless ``dev``).
    """
    environ = os.environ if environ is None else environ
    router = Router(config, registry or default_registry(), clock)  # builds the backends
    for guarded in router.backends.values():
        guarded.backend.check_environment(environ)
    store_options(config.storage.options, environ)  # the store's credential variables
    warnings = () if dev else _check_secrets(config)
    if config.auth.jwt_secrets:
        return Prepared(config, router, warnings=warnings)
    if not dev:
        raise ConfigError(
            "auth.jwt_secrets: a secret of at least 32 bytes is required "
            "(set GATEWAY_JWT_SECRET), or run in development mode (--dev)"
        )
    auth = replace(config.auth, jwt_secrets=(secrets.token_urlsafe(48),))
    return Prepared(replace(config, auth=auth), router, generated_jwt_secret=True)
