"""Configuration: ``config.yaml`` decoded once, at start-up, into frozen structs.

An unknown key or a bad value is a :class:`ConfigError` whose message names the key by
its dotted path (``plans.free.images_per_dya: unknown key``). String values may reference
the environment as ``${VAR}`` or ``${VAR:-default}``; the variables ``DATABASE_URL``,
``REDIS_URL`` and ``GATEWAY_JWT_SECRET`` override their keys.

``schema`` holds the structs (every key's default, constraint and doc), ``load`` reads
the file and the environment, ``decode`` turns msgspec's errors into an operator's words.
What the config cannot know alone (the backends' options and credentials, a JWT secret
being present) is checked by :func:`gateway.startup.prepare`, which ``serve`` and
``check-config`` both run.
"""

from gateway.config.errors import ConfigError
from gateway.config.load import default_config_path, load_config, parse_config
from gateway.config.schema import (
    AdminConfig,
    AuthConfig,
    BackendConfig,
    BillingConfig,
    Config,
    ConsoleConfig,
    DatabaseConfig,
    EgressConfig,
    EmailConfig,
    IdempotencyConfig,
    JobsConfig,
    KeysConfig,
    LoggingConfig,
    ModelPricing,
    PlanConfig,
    PricingConfig,
    RedisConfig,
    ResilienceConfig,
    Section,
    ServerConfig,
    StorageConfig,
    UsageConfig,
    WebhooksConfig,
)

__all__ = [
    "AdminConfig",
    "AuthConfig",
    "BackendConfig",
    "BillingConfig",
    "Config",
    "ConfigError",
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
    "default_config_path",
    "load_config",
    "parse_config",
]
