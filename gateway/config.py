"""Configuration: parsed and validated once, at start-up, into frozen objects.

An unknown key or a bad value is a :class:`ConfigError` whose message names the
key by its dotted path (``plans.free.images_per_dya: unknown key``). String values
may reference the environment as ``${VAR}`` or ``${VAR:-default}``; the variables
``DATABASE_URL``, ``REDIS_URL`` and ``GATEWAY_JWT_SECRET`` override their keys.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from gateway.egress.policy import parse_allow_entry

__all__ = [
    "AdminConfig",
    "AuthConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "EgressConfig",
    "KeysConfig",
    "LoggingConfig",
    "PlanConfig",
    "RedisConfig",
    "ResilienceConfig",
    "ServerConfig",
    "UsageConfig",
    "default_config_path",
    "load_config",
    "parse_config",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    #: Seconds a client has to send a request body once its headers are in (then 408).
    body_read_timeout_seconds: float = 10.0
    #: Seconds a client has to send a request's headers, from its first byte (from the
    #: connection's start for the first request); then the connection is closed.
    header_read_timeout_seconds: float = 10.0
    #: Seconds an idle keep-alive connection is kept. Keep it above the idle timeout of
    #: any load balancer in front of the gateway.
    keepalive_timeout_seconds: float = 75.0
    #: Seconds in-flight requests get to finish after SIGTERM.
    shutdown_timeout_seconds: float = 30.0
    #: Processes sharing the port (SO_REUSEPORT); 0 or "auto" = one per CPU.
    workers: int = 1
    #: Connections the process's one shared upstream HTTP client may hold open, in all
    #: and per upstream host (0 = no per-host cap).
    upstream_max_connections: int = 200
    upstream_max_connections_per_host: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = "postgresql://postgres@127.0.0.1:5432/gateway"
    pool_min_size: int = 1
    pool_max_size: int = 10
    #: Statement timeout for the gateway's own queries.
    command_timeout_seconds: float = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "gw:"
    max_connections: int = 64
    socket_timeout_seconds: float = 2.0
    #: While Redis is unreachable: ``closed`` refuses generation calls (503, no free
    #: images); ``open`` admits them under per-process approximate limits, counts
    #: them locally and adds them to Redis when it is back.
    on_failure: str = "closed"


@dataclasses.dataclass(frozen=True, slots=True)
class KeysConfig:
    prefix: str = "nb_live_"
    #: How long a process trusts its own copy of a key record before asking Redis. Only
    #: a backstop: every change reaches every process at once over pub/sub, and a
    #: process that loses that channel drops all its copies.
    local_ttl_seconds: float = 300.0
    #: How many key records a process keeps (least recently used go first).
    local_max_entries: int = 100_000
    #: How long a key record is kept in Redis. A backstop too: every change deletes it.
    redis_ttl_seconds: float = 3600.0
    #: How long "no such key" is remembered in-process.
    negative_ttl_seconds: float = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class UsageConfig:
    flush_interval_seconds: float = 1.0
    #: Where each process keeps its journal of reservations in flight, so that the
    #: images of a process that dies mid-request are given back by the others. Every
    #: process sharing this Redis data on a host must use the same directory. Empty:
    #: ``<temp dir>/image-gateway-journal/<hash of redis.url and redis.key_prefix>``.
    journal_dir: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class AuthConfig:
    #: Secrets for account tokens (32+ bytes each): the first signs, all verify.
    jwt_secrets: tuple[str, ...] = ()
    token_ttl_seconds: int = 3600
    bcrypt_cost: int = 12
    #: Active API keys one user may hold.
    max_keys_per_user: int = 10
    #: Per client IP, in any rolling 60 seconds.
    register_per_minute_per_ip: int = 5
    login_per_minute_per_ip: int = 20
    #: Failed logins for one account before each further attempt must wait
    #: (1 s, then doubling, up to max_login_delay_seconds).
    login_failures_before_delay: int = 5
    max_login_delay_seconds: int = 900
    #: Peers whose X-Forwarded-For is believed (addresses or CIDR networks).
    trusted_proxies: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    #: ``json`` (one object per line) or ``text`` (for a terminal).
    format: str = "json"
    #: One line per request.
    access_log: bool = True
    #: Access lines are written in batches, at most this long after their request
    #: (and at once when 256 are waiting, and when the server stops); 0: at the end of
    #: each event-loop turn.
    access_log_flush_seconds: float = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class AdminConfig:
    #: Bearer token of the admin API; empty turns the admin API off (404).
    token: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class EgressConfig:
    """Where connections made on behalf of untrusted data (image URLs) may go."""

    #: Networks (CIDR, or a bare address) and host names permitted besides the
    #: globally routable addresses, e.g. ["10.20.0.0/16", "images.internal.example"].
    allow: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class PlanConfig:
    requests_per_minute: int
    images_per_day: int
    max_images_per_request: int = 4


@dataclasses.dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """How the gateway protects an upstream and itself; keys of any ``backends.<name>``."""

    #: Calls in flight at once (protects GPU servers); 0 = no cap.
    max_concurrency: int = 0
    #: Calls that may wait for a free slot; past that: 503 at once.
    max_queue: int = 100
    #: Extra attempts after a connection error or an upstream 429/502/503.
    retries: int = 2
    #: First backoff before a retry (doubled each time, with jitter).
    retry_backoff_seconds: float = 0.2
    #: Consecutive failures that open the circuit breaker; 0 = no breaker.
    breaker_failures: int = 5
    #: How long the breaker stays open before one probe call is let through.
    breaker_reset_seconds: float = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class BackendConfig:
    """One upstream: its registered ``type``, the type's own options, and resilience."""

    name: str
    type: str
    options: Mapping[str, Any]
    resilience: ResilienceConfig = ResilienceConfig()


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    plans: Mapping[str, PlanConfig]
    backends: Mapping[str, BackendConfig]
    #: Client model name -> backends to try, in order (the first, then fallbacks).
    models: Mapping[str, tuple[str, ...]]
    default_plan: str
    default_model: str
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    keys: KeysConfig = KeysConfig()
    usage: UsageConfig = UsageConfig()
    auth: AuthConfig = AuthConfig()
    admin: AdminConfig = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    egress: EgressConfig = EgressConfig()


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "redis": RedisConfig,
    "keys": KeysConfig,
    "usage": UsageConfig,
    "auth": AuthConfig,
    "admin": AdminConfig,
    "logging": LoggingConfig,
    "egress": EgressConfig,
}


def default_config_path() -> Path:
    return Path(os.environ.get("GATEWAY_CONFIG", "config.yaml"))


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, interpolate and validate a YAML config file."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw if raw is not None else {}, os.environ)


def parse_config(raw: Any, environ: Mapping[str, str]) -> Config:
    """Validate an already-parsed document (a mapping) into a :class:`Config`."""
    raw = _interpolate(raw, "", environ)
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a mapping")
    raw = _apply_env_overrides(raw, environ)
    server = raw.get("server")
    if isinstance(server, dict) and server.get("workers") == "auto":
        raw["server"] = {**server, "workers": 0}
    known = {f.name for f in dataclasses.fields(Config)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{key}: unknown key")

    plans = {
        name: _build(PlanConfig, body, f"plans.{name}")
        for name, body in _mapping(raw.get("plans"), "plans", required=True).items()
    }
    if not plans:
        raise ConfigError("plans: at least one plan is required")
    backends = {}
    for name, body in _mapping(raw.get("backends"), "backends", required=True).items():
        body = _mapping(body, f"backends.{name}", required=True)
        btype = body.get("type")
        if not isinstance(btype, str) or not btype:
            raise ConfigError(f"backends.{name}.type: required, a backend type name")
        generic = {f.name for f in dataclasses.fields(ResilienceConfig)}
        options = {k: v for k, v in body.items() if k != "type" and k not in generic}
        resilience = _build(
            ResilienceConfig, {k: v for k, v in body.items() if k in generic}, f"backends.{name}"
        )
        backends[name] = BackendConfig(
            name=name, type=btype, options=options, resilience=resilience
        )
    if not backends:
        raise ConfigError("backends: at least one backend is required")
    models: dict[str, tuple[str, ...]] = {}
    for name, target in _mapping(raw.get("models"), "models", required=True).items():
        chain = [target] if isinstance(target, str) else target
        if not isinstance(chain, list) or not chain or not all(isinstance(t, str) for t in chain):
            raise ConfigError(
                f"models.{name}: must be a backend name or a list of them (fallback order)"
            )
        for backend in chain:
            if backend not in backends:
                raise ConfigError(f"models.{name}: unknown backend {backend!r}")
        if len(set(chain)) != len(chain):
            raise ConfigError(f"models.{name}: a backend is listed twice")
        models[name] = tuple(chain)
    if not models:
        raise ConfigError("models: at least one model is required")

    sections = {
        name: _build(cls, raw[name], name) for name, cls in _SECTIONS.items() if name in raw
    }
    if "auth" in sections:  # an unset "${GATEWAY_JWT_SECRET:-}" leaves an empty entry
        auth = sections["auth"]
        secrets = tuple(s for s in auth.jwt_secrets if s)
        sections["auth"] = dataclasses.replace(auth, jwt_secrets=secrets)

    default_plan = raw.get("default_plan", next(iter(plans)))
    if not isinstance(default_plan, str) or default_plan not in plans:
        raise ConfigError(f"default_plan: unknown plan {default_plan!r}")
    default_model = raw.get("default_model", next(iter(models)))
    if not isinstance(default_model, str) or default_model not in models:
        raise ConfigError(f"default_model: unknown model {default_model!r}")

    config = Config(
        plans=types.MappingProxyType(plans),
        backends=types.MappingProxyType(backends),
        models=types.MappingProxyType(models),
        default_plan=default_plan,
        default_model=default_model,
        **sections,
    )
    _check_values(config)
    return config


def _apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    raw = dict(raw)
    for var, section, key in (("DATABASE_URL", "database", "url"), ("REDIS_URL", "redis", "url")):
        if environ.get(var):
            body = _mapping(raw.get(section), section, required=False)
            raw[section] = {**body, key: environ[var]}
    secret = environ.get("GATEWAY_JWT_SECRET")
    if secret:
        body = _mapping(raw.get("auth"), "auth", required=False)
        configured = body.get("jwt_secrets") or []
        if not isinstance(configured, list):
            raise ConfigError("auth.jwt_secrets: must be a list")
        rest = [s for s in configured if s != secret]
        raw["auth"] = {**body, "jwt_secrets": [secret, *rest]}
    return raw


def _interpolate(value: Any, path: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = environ.get(name)
            if found or (found is not None and default is None):
                return found
            if default is not None:
                return default
            raise ConfigError(f"{path or 'config'}: environment variable {name} is not set")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path + '.' if path else ''}{k}: keys must be strings")
            out[k] = _interpolate(v, f"{path}.{k}" if path else k, environ)
        return out
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    return value


def _mapping(value: Any, path: str, *, required: bool) -> dict[str, Any]:
    if value is None:
        if required:
            raise ConfigError(f"{path}: required")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must be a mapping")
    for name in value:
        if path in ("plans", "backends", "models") and not _NAME.match(name):
            raise ConfigError(f"{path}.{name}: names use letters, digits, '.', '_' and '-'")
    return value


def _build(cls: type[Any], value: Any, path: str) -> Any:
    body = _mapping(value, path, required=True)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in body:
        if key not in fields:
            raise ConfigError(f"{path}.{key}: unknown key")
    kwargs = {}
    for name, field in fields.items():
        if name in body:
            kwargs[name] = _coerce(body[name], hints[name], f"{path}.{name}")
        elif field.default is dataclasses.MISSING:
            raise ConfigError(f"{path}.{name}: required")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{path}: must be a list")
        return tuple(_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string")
        return value
    raise ConfigError(f"{path}: unsupported value")  # pragma: no cover - schema bug


def _check_values(config: Config) -> None:
    def positive(path: str, value: float, *, zero_ok: bool = False) -> None:
        if value < 0 or (value == 0 and not zero_ok):
            raise ConfigError(f"{path}: must be {'>= 0' if zero_ok else '> 0'}")

    if not 0 < config.server.port < 65536:
        raise ConfigError("server.port: must be between 1 and 65535")
    positive("server.max_body_bytes", config.server.max_body_bytes)
    positive("server.body_read_timeout_seconds", config.server.body_read_timeout_seconds)
    positive("server.header_read_timeout_seconds", config.server.header_read_timeout_seconds)
    positive("server.keepalive_timeout_seconds", config.server.keepalive_timeout_seconds)
    positive("server.shutdown_timeout_seconds", config.server.shutdown_timeout_seconds)
    positive("server.upstream_max_connections", config.server.upstream_max_connections)
    positive(
        "server.upstream_max_connections_per_host",
        config.server.upstream_max_connections_per_host,
        zero_ok=True,
    )
    if not 0 <= config.server.workers <= 256:
        raise ConfigError("server.workers: a number from 1 to 256, or 0 / 'auto' (one per CPU)")
    if not config.database.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database.url: must be a postgresql:// URL")
    positive("database.pool_min_size", config.database.pool_min_size, zero_ok=True)
    if config.database.pool_max_size < max(1, config.database.pool_min_size):
        raise ConfigError("database.pool_max_size: must be >= pool_min_size and >= 1")
    positive("database.command_timeout_seconds", config.database.command_timeout_seconds)
    if not config.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis.url: must be a redis://, rediss:// or unix:// URL")
    if "{" in config.redis.key_prefix or "}" in config.redis.key_prefix:
        raise ConfigError("redis.key_prefix: must not contain '{' or '}' (hash tags)")
    positive("redis.max_connections", config.redis.max_connections)
    if config.redis.on_failure not in ("closed", "open"):
        raise ConfigError("redis.on_failure: 'closed' or 'open'")
    positive("redis.socket_timeout_seconds", config.redis.socket_timeout_seconds)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,23}", config.keys.prefix):
        raise ConfigError("keys.prefix: 1-24 letters, digits or '_', starting with a letter")
    positive("keys.local_ttl_seconds", config.keys.local_ttl_seconds)
    positive("keys.local_max_entries", config.keys.local_max_entries)
    positive("keys.redis_ttl_seconds", config.keys.redis_ttl_seconds)
    positive("keys.negative_ttl_seconds", config.keys.negative_ttl_seconds)
    positive("usage.flush_interval_seconds", config.usage.flush_interval_seconds)
    positive("auth.token_ttl_seconds", config.auth.token_ttl_seconds)
    for i, secret in enumerate(config.auth.jwt_secrets):
        if len(secret.encode()) < 32:
            raise ConfigError(f"auth.jwt_secrets[{i}]: must be at least 32 bytes")
    for name in (
        "max_keys_per_user",
        "register_per_minute_per_ip",
        "login_per_minute_per_ip",
        "login_failures_before_delay",
        "max_login_delay_seconds",
    ):
        positive(f"auth.{name}", getattr(config.auth, name))
    for i, proxy in enumerate(config.auth.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"auth.trusted_proxies[{i}]: {proxy!r} is not an address or network"
            ) from None
    for i, entry in enumerate(config.egress.allow):
        try:
            parse_allow_entry(entry)
        except ValueError as exc:
            raise ConfigError(f"egress.allow[{i}]: {exc}") from None
    if config.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("logging.level: one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    if config.logging.format not in ("json", "text"):
        raise ConfigError("logging.format: 'json' or 'text'")
    if not 0 <= config.logging.access_log_flush_seconds <= 10:
        raise ConfigError("logging.access_log_flush_seconds: must be from 0 to 10")
    if config.admin.token and len(config.admin.token) < 16:
        raise ConfigError("admin.token: must be at least 16 characters (or empty: off)")
    if not 4 <= config.auth.bcrypt_cost <= 16:
        raise ConfigError("auth.bcrypt_cost: must be between 4 and 16")
    for name, backend in config.backends.items():
        r = backend.resilience
        positive(f"backends.{name}.max_concurrency", r.max_concurrency, zero_ok=True)
        positive(f"backends.{name}.max_queue", r.max_queue, zero_ok=True)
        positive(f"backends.{name}.retries", r.retries, zero_ok=True)
        positive(f"backends.{name}.retry_backoff_seconds", r.retry_backoff_seconds, zero_ok=True)
        positive(f"backends.{name}.breaker_failures", r.breaker_failures, zero_ok=True)
        positive(f"backends.{name}.breaker_reset_seconds", r.breaker_reset_seconds)
    for name, plan in config.plans.items():
        positive(f"plans.{name}.requests_per_minute", plan.requests_per_minute)
        positive(f"plans.{name}.images_per_day", plan.images_per_day)
        positive(f"plans.{name}.max_images_per_request", plan.max_images_per_request)
