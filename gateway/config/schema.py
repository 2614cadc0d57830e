"""The shape of ``config.yaml``: one frozen struct per section.

Each key is a field, and its default, its constraint and its doc live there, once: a
constraint is a ``msgspec.Meta`` on the field's type (``ge``, ``gt``, ``le``,
``pattern``...), and decoding turns a value that breaks it into an error naming the key
(:mod:`gateway.config.decode`). A constraint whose generated wording would not help an
operator carries its own words (:func:`says`). Checks across fields are in
``__post_init__``, which raises :class:`ConfigError` with the key relative to the struct.

Adding a section is one struct (a :class:`Section`) and one field of :class:`Config`.
"""

from __future__ import annotations

import ipaddress
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from msgspec import Meta
from msgspec.structs import force_setattr

from gateway.config.billing import BillingConfig
from gateway.config.email import EmailConfig
from gateway.config.errors import ConfigError
from gateway.config.jobs import IdempotencyConfig, JobsConfig, WebhooksConfig
from gateway.config.pricing import ModelPricing, PricingConfig
from gateway.config.section import Section, doc, says
from gateway.config.storage import StorageConfig
from gateway.config.urls import cluster_nodes

__all__ = [
    "AdminConfig",
    "AuthConfig",
    "BackendConfig",
    "BillingConfig",
    "Config",
    "ConsoleConfig",
    "DatabaseConfig",
    "EgressConfig",
    "EmailConfig",
    "IdempotencyConfig",
    "JobsConfig",
    "KeysConfig",
    "LoggingConfig",
    "ModelPricing",
    "PlanConfig",
    "PricingConfig",
    "RedisConfig",
    "ResilienceConfig",
    "Section",
    "ServerConfig",
    "StorageConfig",
    "UsageConfig",
    "WebhooksConfig",
    "doc",
    "says",
]

#: Names of plans, backends and models.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Account-token secrets are at least this long, in bytes.
MIN_JWT_SECRET_BYTES = 32


PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
Count = Annotated[int, Meta(ge=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]


class ServerConfig(Section, frozen=True, kw_only=True):
    host: Annotated[str, doc("The address to listen on.")] = "0.0.0.0"
    port: Annotated[int, Meta(ge=1, le=65535), doc("The port to listen on.")] = 8080
    max_body_bytes: Annotated[PositiveInt, doc("Larger request bodies get 413.")] = 1_048_576
    max_upload_bytes: Annotated[
        PositiveInt,
        doc(
            "The largest file a multipart upload (image edits and variations) may carry; a "
            "larger one gets 413. A whole upload may be up to 17 such files (16 images and "
            "a mask) plus `max_body_bytes`."
        ),
    ] = 26_214_400
    body_read_timeout_seconds: Annotated[
        PositiveFloat,
        doc("Seconds a client has to send a request body once its headers are in (then 408)."),
    ] = 10.0
    header_read_timeout_seconds: Annotated[
        PositiveFloat,
        doc(
            "Seconds a client has to send a request's headers, from its first byte (from the "
            "connection's start for the first request); then the connection is closed."
        ),
    ] = 10.0
    keepalive_timeout_seconds: Annotated[
        PositiveFloat,
        doc(
            "Seconds an idle keep-alive connection is kept. Keep it above the idle timeout "
            "of any load balancer in front of the gateway."
        ),
    ] = 75.0
    shutdown_timeout_seconds: Annotated[
        PositiveFloat, doc("Seconds in-flight requests get to finish after SIGTERM.")
    ] = 30.0
    workers: Annotated[
        int,
        Meta(ge=0, le=256, extra=says("a number from 1 to 256, or 0 / 'auto' (one per CPU)")),
        doc("Processes sharing the port (SO_REUSEPORT); 0 or 'auto': one per CPU."),
    ] = 1
    upstream_max_connections: Annotated[
        PositiveInt,
        doc("Connections the process's shared upstream HTTP clients may hold open, in all."),
    ] = 200
    upstream_max_connections_per_host: Annotated[
        Count, doc("The same, per upstream host (0: no per-host cap).")
    ] = 0
    metrics_port: Annotated[
        int,
        Meta(ge=0, le=65535),
        doc(
            "Serve /metrics on this port of the same host, and not on the public port "
            "(there it is 404); 0: /metrics on the public port."
        ),
    ] = 0

    def __post_init__(self) -> None:
        if self.metrics_port == self.port:
            raise ConfigError("metrics_port: must differ from port")


class DatabaseConfig(Section, frozen=True, kw_only=True):
    url: Annotated[
        str,
        Meta(pattern=r"\Apostgres(ql)?://", extra=says("must be a postgresql:// URL")),
        doc("The Postgres database (DATABASE_URL overrides it)."),
    ] = "postgresql://postgres@127.0.0.1:5432/gateway"
    pool_min_size: Annotated[Count, doc("Connections the pool keeps open.")] = 1
    pool_max_size: Annotated[
        int,
        Meta(ge=1, extra=says("must be >= pool_min_size and >= 1")),
        doc("Connections the pool may open (at least pool_min_size)."),
    ] = 10
    command_timeout_seconds: Annotated[
        PositiveFloat, doc("Statement timeout for the gateway's own queries.")
    ] = 5.0

    def __post_init__(self) -> None:
        if self.pool_max_size < self.pool_min_size:
            raise ConfigError("pool_max_size: must be >= pool_min_size and >= 1")


class RedisConfig(Section, frozen=True, kw_only=True):
    url: Annotated[
        str,
        Meta(
            pattern=r"\A(redis|rediss|unix|redis\+cluster|rediss\+cluster)://",
            extra=says(
                "must be a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL"
            ),
        ),
        doc(
            "The Redis server (REDIS_URL overrides it). A Redis Cluster: "
            "redis+cluster://host:port,host:port,... (any of its nodes; the rest are found)."
        ),
    ] = "redis://127.0.0.1:6379/0"
    cluster: Annotated[
        bool,
        doc(
            "Whether url is a node of a Redis Cluster (implied by a redis+cluster:// url). "
            "Every script and multi-key command then stays in one hash slot, and the "
            "hot path's pipelined client routes each call to the node owning its slot."
        ),
    ] = False
    key_prefix: Annotated[
        str,
        Meta(pattern=r"\A[^{}]*\Z", extra=says("must not contain '{' or '}' (hash tags)")),
        doc("Every Redis key the gateway writes starts with this."),
    ] = "gw:"
    max_connections: Annotated[PositiveInt, doc("The slower paths' connection pool.")] = 64
    socket_timeout_seconds: Annotated[
        PositiveFloat, doc("How long a Redis call may take before it counts as failed.")
    ] = 2.0
    on_failure: Annotated[
        Literal["closed", "open"],
        Meta(extra=says("'closed' or 'open'")),
        doc(
            "While Redis is unreachable: 'closed' refuses generation calls (503, no free "
            "images); 'open' admits them under per-process approximate limits, counts them "
            "locally and adds them to Redis when it is back."
        ),
    ] = "closed"

    def __post_init__(self) -> None:
        if self.in_cluster:
            if self.url.startswith("unix://"):
                raise ConfigError("url: a Redis Cluster is reached over TCP, not unix://")
            try:
                cluster_nodes(self.url)
            except ValueError as exc:
                raise ConfigError(f"url: {exc}") from None

    @property
    def in_cluster(self) -> bool:
        """Whether the gateway runs on a Redis Cluster (``cluster`` or the URL says so)."""
        return self.cluster or "+cluster://" in self.url[:16]


class KeysConfig(Section, frozen=True, kw_only=True):
    prefix: Annotated[
        str,
        Meta(
            pattern=r"\A[A-Za-z][A-Za-z0-9_]{0,23}\Z",
            extra=says("1-24 letters, digits or '_', starting with a letter"),
        ),
        doc("The API key prefix."),
    ] = "nb_live_"
    local_ttl_seconds: Annotated[
        PositiveFloat,
        doc(
            "How long a process trusts its own copy of a key record before asking Redis. "
            "Only a backstop: every change reaches every process at once over pub/sub, and "
            "a process that loses that channel drops all its copies."
        ),
    ] = 300.0
    local_max_entries: Annotated[
        PositiveInt, doc("How many key records a process keeps (least recently used go first).")
    ] = 100_000
    redis_ttl_seconds: Annotated[
        PositiveFloat,
        doc("How long a key record is kept in Redis. A backstop too: every change deletes it."),
    ] = 3600.0
    negative_ttl_seconds: Annotated[
        PositiveFloat, doc('How long "no such key" is remembered in-process.')
    ] = 60.0


class UsageConfig(Section, frozen=True, kw_only=True):
    flush_interval_seconds: Annotated[
        PositiveFloat, doc("How often live usage counters are written to Postgres.")
    ] = 1.0
    journal_dir: Annotated[
        str,
        doc(
            "Where each process keeps its journal of reservations in flight, so that the "
            "images of a process that dies mid-request are given back by the others. Every "
            "process sharing this Redis data on a host must use the same directory. Empty: "
            "<temp dir>/image-gateway-journal/<hash of redis.url and redis.key_prefix>."
        ),
    ] = ""


class AuthConfig(Section, frozen=True, kw_only=True):
    jwt_secrets: Annotated[
        tuple[str, ...],
        doc(
            f"Secrets for account tokens ({MIN_JWT_SECRET_BYTES}+ bytes each): the first "
            "signs, all verify. GATEWAY_JWT_SECRET is put first. Empty entries (an unset "
            "${VAR:-}) are dropped. `serve` refuses to start without one, except with --dev."
        ),
    ] = ()
    token_ttl_seconds: Annotated[PositiveInt, doc("How long an access token lasts.")] = 3600
    bcrypt_cost: Annotated[int, Meta(ge=4, le=16), doc("bcrypt's work factor for passwords.")] = 12
    max_keys_per_user: Annotated[PositiveInt, doc("Active API keys one user may hold.")] = 10
    register_per_minute_per_ip: Annotated[
        PositiveInt, doc("Registrations per client IP in any rolling 60 seconds.")
    ] = 5
    login_per_minute_per_ip: Annotated[
        PositiveInt, doc("Logins per client IP in any rolling 60 seconds.")
    ] = 20
    login_failures_before_delay: Annotated[
        PositiveInt,
        doc(
            "Failed logins for one account before each further attempt must wait (1 s, "
            "then doubling, up to max_login_delay_seconds)."
        ),
    ] = 5
    max_login_delay_seconds: Annotated[
        PositiveInt, doc("The longest wait between login attempts of one account.")
    ] = 900
    trusted_proxies: Annotated[
        tuple[str, ...],
        doc("Peers whose X-Forwarded-For is believed (addresses or CIDR networks)."),
    ] = ()

    def __post_init__(self) -> None:
        secrets = tuple(s for s in self.jwt_secrets if s)
        force_setattr(self, "jwt_secrets", secrets)
        for i, secret in enumerate(secrets):
            if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
                raise ConfigError(
                    f"jwt_secrets[{i}]: must be at least {MIN_JWT_SECRET_BYTES} bytes"
                )
        for i, proxy in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"trusted_proxies[{i}]: {proxy!r} is not an address or network"
                ) from None


class LoggingConfig(Section, frozen=True, kw_only=True):
    level: Annotated[
        str,
        Meta(
            pattern=r"(?i)\A(DEBUG|INFO|WARNING|ERROR|CRITICAL)\Z",
            extra=says("one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ),
        doc("The lowest level logged."),
    ] = "INFO"
    format: Annotated[
        Literal["json", "text"],
        Meta(extra=says("'json' or 'text'")),
        doc("'json' (one object per line) or 'text' (for a terminal; serve --dev uses it)."),
    ] = "json"
    access_log: Annotated[bool, doc("One line per request.")] = True
    access_log_flush_seconds: Annotated[
        float,
        Meta(ge=0, le=10),
        doc(
            "Access lines are written in batches, at most this long after their request (and "
            "at once when 256 are waiting, and when the server stops); 0: at the end of each "
            "event-loop turn."
        ),
    ] = 0.1


class AdminConfig(Section, frozen=True, kw_only=True):
    token: Annotated[
        str,
        Meta(
            pattern=r"(?s)\A(.{16,})?\Z",
            extra=says("must be at least 16 characters (or empty: off)"),
        ),
        doc("Bearer token of the admin API; empty turns the admin API off (404)."),
    ] = ""
    console_emails: Annotated[
        tuple[str, ...],
        doc(
            "Users with these emails (any case) are operators in the web console; the admin "
            "token also opens the console's operator pages."
        ),
    ] = ()

    def __post_init__(self) -> None:
        force_setattr(
            self, "console_emails", tuple(email.strip().lower() for email in self.console_emails)
        )


class ConsoleConfig(Section, frozen=True, kw_only=True):
    enabled: Annotated[
        bool, doc("Serve the web console for customers and operators at /console/.")
    ] = True


class PlanConfig(Section, frozen=True, kw_only=True):
    requests_per_minute: Annotated[PositiveInt, doc("Requests per rolling minute.")]
    images_per_day: Annotated[PositiveInt, doc("Images per UTC day.")]
    max_images_per_request: Annotated[PositiveInt, doc("The largest n a request may ask.")] = 4
    monthly_credits: Annotated[
        Annotated[int, Meta(ge=0, extra=says("must be >= 0, or unset: no credit limit"))] | None,
        doc(
            "Credits each user of the plan gets at the start of every UTC month (unused ones "
            "lapse); requests are refused (402) once they and the purchased credits run out. "
            "Unset: no credit limit."
        ),
    ] = None


class ResilienceConfig(Section, frozen=True, kw_only=True):
    """How the gateway protects an upstream and itself; keys of any ``backends.<name>``."""

    max_concurrency: Annotated[
        Count, doc("Calls in flight at once (protects GPU servers); 0: no cap.")
    ] = 0
    max_queue: Annotated[Count, doc("Calls that may wait for a free slot; past that: 503.")] = 100
    retries: Annotated[
        Count, doc("Extra attempts after a connection error or an upstream 429/502/503.")
    ] = 2
    retry_backoff_seconds: Annotated[
        NonNegativeFloat, doc("First backoff before a retry (doubled each time, with jitter).")
    ] = 0.2
    breaker_failures: Annotated[
        Count, doc("Consecutive failures that open the circuit breaker; 0: no breaker.")
    ] = 5
    breaker_reset_seconds: Annotated[
        PositiveFloat, doc("How long the breaker stays open before one probe call goes through.")
    ] = 30.0


class BackendConfig(ResilienceConfig, frozen=True, kw_only=True):
    """One upstream: its registered ``type``, the type's own options, and resilience.

    In ``config.yaml`` the options sit beside ``type`` and the resilience keys; loading
    gathers them into :attr:`options`, which the backend type checks when it is built.
    """

    type: Annotated[
        str,
        Meta(min_length=1, extra=says("required, a backend type name", always=True)),
        doc("A registered backend type: local, http, openai, a1111, gemini, replicate..."),
    ]
    options: Annotated[
        Mapping[str, Any], doc("Every other key: the backend type's own options.")
    ] = {}
    name: Annotated[str, doc("The backend's name (its key under backends:).")] = ""

    def __post_init__(self) -> None:
        force_setattr(self, "options", types.MappingProxyType(dict(self.options)))

    @property
    def resilience(self) -> ResilienceConfig:
        """The resilience keys (a backend's config is one)."""
        return self


class EgressConfig(Section, frozen=True, kw_only=True):
    """Where connections made on behalf of untrusted data (image URLs) may go."""

    allow: Annotated[
        tuple[str, ...],
        doc(
            "Networks (CIDR, or a bare address) and host names permitted besides the "
            'globally routable addresses, e.g. ["10.20.0.0/16", "images.internal.example"].'
        ),
    ] = ()

    def __post_init__(self) -> None:
        from gateway.egress.policy import parse_allow_entry  # the policy's own parser

        for i, entry in enumerate(self.allow):
            try:
                parse_allow_entry(entry)
            except ValueError as exc:
                raise ConfigError(f"allow[{i}]: {exc}") from None


#: A client model name's backends, first choice first ("name" in YAML is a list of one).
BackendChain = Annotated[
    tuple[str, ...],
    Meta(
        min_length=1,
        extra=says("must be a backend name or a list of them (fallback order)", always=True),
    ),
]


class Config(Section, frozen=True, kw_only=True):
    plans: Annotated[
        Mapping[str, PlanConfig],
        Meta(min_length=1, extra=says("at least one plan is required")),
        doc("Plan name -> its limits."),
    ]
    backends: Annotated[
        Mapping[str, BackendConfig],
        Meta(min_length=1, extra=says("at least one backend is required")),
        doc("Backend name -> an upstream."),
    ]
    models: Annotated[
        Mapping[str, BackendChain],
        Meta(min_length=1, extra=says("at least one model is required")),
        doc("Client model name -> backends to try, in order (the first, then fallbacks)."),
    ]
    model_fallback: Annotated[
        Mapping[str, Literal["upstream_failures", "never"]],
        doc(
            "Client model name -> when its fallback backends are tried: upstream_failures "
            "(the default: an upstream's fault, never a refusal of the request itself) or "
            "never (only the first backend answers)."
        ),
    ] = types.MappingProxyType({})
    default_plan: Annotated[str, doc("The plan of new users; empty: the first plan.")] = ""
    default_model: Annotated[
        str, doc("The model of a request that names none; empty: the first model.")
    ] = ""
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    keys: KeysConfig = KeysConfig()
    usage: UsageConfig = UsageConfig()
    auth: AuthConfig = AuthConfig()
    admin: AdminConfig = AdminConfig()
    console: ConsoleConfig = ConsoleConfig()
    logging: LoggingConfig = LoggingConfig()
    egress: EgressConfig = EgressConfig()
    storage: StorageConfig = StorageConfig()
    jobs: JobsConfig = JobsConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    email: EmailConfig = EmailConfig()
    pricing: PricingConfig = PricingConfig()
    billing: BillingConfig = BillingConfig()

    def __post_init__(self) -> None:
        for section in ("plans", "backends", "models"):
            named: Mapping[str, Any] = getattr(self, section)
            for name in named:
                if not _NAME.fullmatch(name):
                    raise ConfigError(
                        f"{section}.{name}: names use letters, digits, '.', '_' and '-'"
                    )
            force_setattr(self, section, types.MappingProxyType(dict(named)))
        for model, chain in self.models.items():
            for backend in chain:
                if backend not in self.backends:
                    raise ConfigError(f"models.{model}: unknown backend {backend!r}")
            if len(set(chain)) != len(chain):
                raise ConfigError(f"models.{model}: a backend is listed twice")
        for model in self.model_fallback:
            if model not in self.models:
                raise ConfigError(f"model_fallback.{model}: unknown model")
        force_setattr(self, "model_fallback", types.MappingProxyType(dict(self.model_fallback)))
        for model in self.pricing.models:
            if model not in self.models:
                raise ConfigError(f"pricing.models.{model}: unknown model")
        force_setattr(self, "default_plan", self.default_plan or next(iter(self.plans)))
        if self.default_plan not in self.plans:
            raise ConfigError(f"default_plan: unknown plan {self.default_plan!r}")
        force_setattr(self, "default_model", self.default_model or next(iter(self.models)))
        if self.default_model not in self.models:
            raise ConfigError(f"default_model: unknown model {self.default_model!r}")
