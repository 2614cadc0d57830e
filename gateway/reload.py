"""Live config reload: ``SIGHUP`` (or ``gateway reload``) re-reads ``config.yaml``.

The file is checked exactly as start-up checks it (:func:`gateway.config.load_config`,
then :func:`gateway.startup.prepare`); a file that fails is refused, the error logged,
and the config in effect stays. A good file's live part takes effect at once, in this
process, without dropping a request in flight:

* ``plans`` and ``default_plan``: every key record of this process is dropped, so the
  next request of each key resolves its limits from the new plans (records in Redis
  hold the plan's name, not its limits).
* ``backends``, ``models``, ``model_fallback``, ``default_model``: a backend whose
  config is unchanged is kept as it is (its connections, its breaker); a new or changed
  one is built and started, then requests are routed over the new set; a replaced one
  is closed once the requests that hold it had time to finish
  (``server.shutdown_timeout_seconds``).
* ``admin`` (the token: on, off, rotated) and ``logging.level``, ``logging.access_log``.

Everything else (ports, workers, the database and Redis URLs, secrets, storage...) is
kept as it was: the keys that differ are named in a warning, and a restart applies
them. :func:`config_hash` names the config in effect (``GET /admin/config``,
``gateway_config_info`` in ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import types
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from msgspec.structs import replace

from gateway.backends.base import BackendContext
from gateway.backends.registry import BackendRegistry, Router
from gateway.backends.resilience import GuardedBackend
from gateway.config import Config, ConfigError, load_config
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.startup import prepare

__all__ = [
    "LIVE_KEYS",
    "RELOADER",
    "ConfigReloader",
    "Reread",
    "config_hash",
    "masked_config",
    "read_again",
]

log = logging.getLogger("gateway.reload")

#: What a reload applies; any other key that differs waits for a restart.
LIVE_KEYS = frozenset(
    {
        "plans",
        "default_plan",
        "backends",
        "models",
        "model_fallback",
        "default_model",
        "admin",
        "logging.level",
        "logging.access_log",
    }
)
#: Keys whose values are secrets: shown as "********" (empty ones as empty: "off").
_SECRETS = ("auth.jwt_secrets", "admin.token", "webhooks.secret_key", "storage.signing_secrets")
_URLS = ("database.url", "redis.url", "email.smtp_url")  # their passwords are masked
_MASK = "********"


def _builtins(config: Config) -> dict[str, Any]:
    def mapping(value: Any) -> Any:
        if isinstance(value, types.MappingProxyType):
            return dict(value)
        raise NotImplementedError(type(value))

    data: dict[str, Any] = msgspec.to_builtins(config, enc_hook=mapping, order="sorted")
    return data


def config_hash(config: Config) -> str:
    """SHA-256 (hex) of the config, every value included; equal configs, equal hashes."""
    return hashlib.sha256(msgspec.json.encode(_builtins(config))).hexdigest()


def masked_config(config: Config) -> dict[str, Any]:
    """The config as plain data, secrets masked, URLs without their passwords."""
    data = _builtins(config)
    for key in _SECRETS:
        section, name = key.split(".")
        value = data[section][name]
        if isinstance(value, list | tuple):
            data[section][name] = [_MASK if item else item for item in value]
        elif value:
            data[section][name] = _MASK
    for key in _URLS:
        section, name = key.split(".")
        data[section][name] = _without_password(data[section][name])
    return data


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{_MASK}@{host}"))


def changed_keys(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    """The dotted keys whose values differ (a section's keys one by one)."""
    for field in msgspec.structs.fields(type(old)):
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before == after:
            continue
        key = f"{prefix}{field.name}"
        if isinstance(before, msgspec.Struct) and not prefix:
            yield from changed_keys(before, after, f"{key}.")
        else:
            yield key


def _effective(old: Config, new: Config) -> Config:
    """``old`` with the live part of ``new``."""
    return replace(
        old,
        plans=new.plans,
        default_plan=new.default_plan,
        backends=new.backends,
        models=new.models,
        model_fallback=new.model_fallback,
        default_model=new.default_model,
        admin=new.admin,
        logging=replace(old.logging, level=new.logging.level, access_log=new.logging.access_log),
    )


@dataclass(frozen=True, slots=True)
class Reread:
    #: The config in effect from now on: the running one with the file's live part.
    config: Config
    #: The keys that differ but cannot change while running (kept until a restart).
    kept: list[str]
    #: The file's backends, built and checked (not started).
    router: Router


def read_again(
    old: Config,
    path: Path,
    *,
    dev: bool = False,
    registry: BackendRegistry | None = None,
    environ: Mapping[str, str] | None = None,
) -> Reread:
    """Read ``path`` and check it as start-up does; what a reload of ``old`` makes of it.

    Raises :class:`ConfigError` (the file refused) as start-up would.
    """
    prepared = prepare(load_config(path, environ), dev=dev, registry=registry, environ=environ)
    new = prepared.config
    if prepared.generated_jwt_secret:  # development mode: keep the secret made at start
        new = replace(new, auth=replace(new.auth, jwt_secrets=old.auth.jwt_secrets))
    kept = [
        key
        for key in changed_keys(old, new)
        if key not in LIVE_KEYS and key.partition(".")[0] not in LIVE_KEYS
    ]
    return Reread(_effective(old, new), kept, prepared.router)


class ConfigReloader:
    """Re-reads ``path`` into the running process's :class:`Services` (one per process;
    the supervisor passes ``SIGHUP`` on to every worker)."""

    def __init__(
        self,
        *,
        path: Path | None,
        services: Services,
        context: BackendContext,
        metrics: Metrics,
        dev: bool = False,
        registry: BackendRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self._services = services
        self._context = context
        self._metrics = metrics
        self._dev = dev
        self._registry = registry
        self._clock = clock
        self._environ = environ
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._started: list[GuardedBackend] = []
        self.hash = config_hash(services.config)
        self.loaded_at = time.time()
        self._report_config(None)

    def _report_config(self, previous: str | None) -> None:
        metrics = self._metrics
        if previous is not None:
            metrics.labelled(metrics.config_info, previous[:16]).set(0)
        metrics.labelled(metrics.config_info, self.hash[:16]).set(1)
        metrics.labelled(metrics.config_loaded).set(self.loaded_at)

    async def reload(self) -> bool:
        """Re-read the file and apply its live part; False when it was refused."""
        async with self._lock:  # one reload at a time: a second SIGHUP waits its turn
            try:
                applied = await self._reload()
            except ConfigError as exc:
                self._metrics.labelled(self._metrics.config_reloads, "refused").inc()
                log.error("config reload refused, the config in effect stays: %s", exc)
                return False
            except Exception:
                self._metrics.labelled(self._metrics.config_reloads, "refused").inc()
                log.exception("config reload failed, the config in effect stays")
                return False
            self._metrics.labelled(self._metrics.config_reloads, "applied").inc()
            return applied

    async def _reload(self) -> bool:
        if self.path is None:
            raise ConfigError("this gateway was not started from a config file")
        services = self._services
        old = services.config
        reread = read_again(
            old, self.path, dev=self._dev, registry=self._registry, environ=self._environ
        )
        effective, kept = reread.config, reread.kept
        router = await self._route(old, effective, reread.router)
        replaced = [
            guarded
            for name, guarded in services.router.backends.items()
            if router.backends.get(name) is not guarded
        ]
        services.keys.use_plans(effective.plans, effective.default_plan)
        services.router = router
        if services.jobs is not None:
            services.jobs.use_router(router)
        services.config = effective
        logging.getLogger().setLevel(effective.logging.level.upper())
        logging.getLogger("gateway.access").disabled = not effective.logging.access_log
        self._close_later(replaced, old.server.shutdown_timeout_seconds)

        previous, self.hash, self.loaded_at = self.hash, config_hash(effective), time.time()
        self._report_config(previous)
        log.warning(
            "config reloaded from %s: hash %s (was %s)", self.path, self.hash[:16], previous[:16]
        )
        if kept:
            log.warning(
                "config reload: %s cannot change while the gateway runs; the running values "
                "stay until a restart",
                ", ".join(kept),
            )
        return True

    async def _route(self, old: Config, new: Config, built: Router) -> Router:
        """The new routing: unchanged backends kept, the others (``built``'s) started."""
        keep = {
            name: guarded
            for name, guarded in self._services.router.backends.items()
            if old.backends.get(name) == new.backends.get(name)
        }
        # Every backend is prebuilt: prepare() built (and checked) them all.
        router = Router(new, BackendRegistry(), self._clock, prebuilt={**built.backends, **keep})
        fresh = [g for name, g in router.backends.items() if name not in keep]
        started: list[GuardedBackend] = []
        try:
            for guarded in fresh:
                await guarded.backend.start(self._context)
                started.append(guarded)
        except Exception as exc:
            await _close_all(started)
            raise ConfigError(f"backends.{guarded.name}: could not start: {exc}") from None
        self._started.extend(started)
        return router

    def _close_later(self, backends: list[GuardedBackend], delay: float) -> None:
        if not backends:
            return

        async def close() -> None:
            await asyncio.sleep(delay)  # requests in flight still hold them
            await _close_all(backends)

        task = asyncio.create_task(close(), name="close-replaced-backends")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """At shutdown: what a reload started, and what waits to be closed."""
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await _close_all(self._started)


async def _close_all(backends: list[GuardedBackend]) -> None:
    for guarded in backends:
        with contextlib.suppress(Exception):
            await guarded.backend.close()


RELOADER = web.AppKey("reloader", ConfigReloader)
