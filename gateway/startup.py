"""What start-up can check before it connects to anything: ``serve`` and ``check-config``
both run :func:`prepare`, so a config that ``check-config`` passes starts.

Loading the config (:func:`gateway.config.load_config`) checks every key on its own and
the references between them (plans, models, backends). :func:`prepare` adds what needs
the code and the environment: each backend built by its type (its options checked) and
its credentials' variables set, and a JWT secret present (outside development mode).
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

__all__ = ["DEV_MODE_WARNING", "Prepared", "StartupError", "prepare"]

#: Logged when development mode made up the JWT secret.
DEV_MODE_WARNING = (
    "development mode: signing access tokens with a generated secret; "
    "tokens will not survive a restart"
)


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
    secret (unless ``dev``, which generates one).
    """
    environ = os.environ if environ is None else environ
    router = Router(config, registry or default_registry(), clock)  # builds the backends
    for guarded in router.backends.values():
        guarded.backend.check_environment(environ)
    store_options(config.storage.options, environ)  # the store's credential variables
    if config.auth.jwt_secrets:
        return Prepared(config, router)
    if not dev:
        raise ConfigError(
            "auth.jwt_secrets: a secret of at least 32 bytes is required "
            "(set GATEWAY_JWT_SECRET), or run in development mode (--dev)"
        )
    auth = replace(config.auth, jwt_secrets=(secrets.token_urlsafe(48),))
    return Prepared(replace(config, auth=auth), router, generated_jwt_secret=True)
