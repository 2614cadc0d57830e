"""Configuration: every mistake is a ConfigError naming the key by its dotted path.

Error cases live one per file in ``tests/config/cases/`` (each differs from ``valid.yaml``
in one place, and says how in its first line); the table below pairs each file with
the exact message an operator sees.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import msgspec
import pytest
import yaml

from gateway.backends.registry import Router, default_registry
from gateway.config import (
    AuthConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    KeysConfig,
    PlanConfig,
    RedisConfig,
    Section,
    ServerConfig,
    UsageConfig,
    load_config,
    parse_config,
)
from gateway.config.decode import decode
from gateway.startup import prepare
from tests.support.config import merge
from tests.support.paths import CONFIGS, ROOT

SHIPPED = ROOT / "config.yaml"
OVERRIDE_VARS = ("DATABASE_URL", "REDIS_URL", "GATEWAY_JWT_SECRET", "GATEWAY_TEST_NEVER_SET")


@pytest.fixture
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config reads os.environ: keep the developer's or CI's variables out."""
    for name in OVERRIDE_VARS:
        monkeypatch.delenv(name, raising=False)


def valid_raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((CONFIGS / "valid.yaml").read_text())
    return raw


def parse_error(raw: Any, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ or {})
    return str(info.value)


def with_change(path: str, value: Any) -> dict[str, Any]:
    """``valid.yaml`` with the dotted ``path`` set to ``value``."""
    raw = valid_raw()
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


# -- the shipped config ----------------------------------------------------------------


def test_shipped_config_with_an_empty_environment_uses_the_defaults():
    config = parse_config(yaml.safe_load(SHIPPED.read_text()), {})
    assert config.database.url == "postgresql://postgres@127.0.0.1:5432/gateway"
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert config.redis.key_prefix == "gw:"
    assert config.server == ServerConfig(
        host="0.0.0.0", port=8080, max_body_bytes=1048576, shutdown_timeout_seconds=30.0
    )
    assert config.keys.prefix == "nb_live_"
    assert config.keys.local_ttl_seconds == 300.0
    assert config.keys.redis_ttl_seconds == 3600.0
    assert config.usage.flush_interval_seconds == 1.0
    assert dict(config.plans) == {
        "free": PlanConfig(requests_per_minute=10, images_per_day=50, max_images_per_request=4),
        "pro": PlanConfig(requests_per_minute=600, images_per_day=5000, max_images_per_request=10),
    }
    assert config.default_plan == "free"
    assert list(config.backends) == ["local"]
    assert config.backends["local"].type == "local"
    assert list(config.models) == ["local"]
    assert config.default_model == "local"
    assert config.auth.jwt_secrets == ()


def test_shipped_config_loads_from_its_file(no_env_overrides: None):
    config = load_config(SHIPPED)
    assert config.database.url == "postgresql://postgres@127.0.0.1:5432/gateway"
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    Router(config, default_registry())  # and its backends can be built


def test_shipped_config_follows_the_environment(no_env_overrides: None, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal:5432/images")
    monkeypatch.setenv("REDIS_URL", "rediss://cache.internal:6380/2")
    config = load_config(SHIPPED)
    assert config.database.url == "postgresql://app@db.internal:5432/images"
    assert config.redis.url == "rediss://cache.internal:6380/2"


def test_valid_fixture_loads(no_env_overrides: None):
    config = load_config(CONFIGS / "valid.yaml")
    assert config.keys.prefix == "nb_test_"
    Router(config, default_registry())


def test_minimal_config_fills_every_section_with_defaults():
    config = parse_config(
        {
            "plans": {"basic": {"requests_per_minute": 1, "images_per_day": 1}},
            "backends": {"b": {"type": "local"}},
            "models": {"m": "b"},
        },
        {},
    )
    assert config.server == ServerConfig()
    assert config.database == DatabaseConfig()
    assert config.redis == RedisConfig()
    assert config.keys == KeysConfig()
    assert config.usage == UsageConfig()
    assert config.auth == AuthConfig()
    assert config.plans["basic"].max_images_per_request == 4
    assert config.default_plan == "basic"  # the first plan, when none is named
    assert config.default_model == "m"  # the first model, when none is named


def test_config_is_frozen():
    config = parse_config(valid_raw(), {})
    with pytest.raises(AttributeError):
        config.default_plan = "pro"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.plans["free"] = config.plans["pro"]  # type: ignore[index]


# -- one file per error case, one exact message each -----------------------------------

ERROR_CASES = [
    ("unknown_plan_key.yaml", "plans.free.images_per_dya: unknown key"),
    ("unknown_top_level_key.yaml", "servr: unknown key"),
    ("unknown_server_key.yaml", "server.prot: unknown key"),
    ("port_out_of_range.yaml", "server.port: must be between 1 and 65535"),
    ("port_zero.yaml", "server.port: must be between 1 and 65535"),
    ("port_string.yaml", "server.port: must be a whole number"),
    ("zero_images_per_day.yaml", "plans.free.images_per_day: must be > 0"),
    ("negative_requests_per_minute.yaml", "plans.pro.requests_per_minute: must be > 0"),
    ("bool_for_int.yaml", "plans.free.max_images_per_request: must be a whole number"),
    ("string_for_number.yaml", "keys.local_ttl_seconds: must be a number"),
    ("float_for_int.yaml", "plans.free.requests_per_minute: must be a whole number"),
    ("missing_plan_limit.yaml", "plans.free.images_per_day: required"),
    ("model_unknown_backend.yaml", "models.sdxl: unknown backend 'gpu'"),
    ("default_plan_unknown.yaml", "default_plan: unknown plan 'enterprise'"),
    ("default_model_unknown.yaml", "default_model: unknown model 'sdxl'"),
    (
        "redis_key_prefix_hash_tag.yaml",
        "redis.key_prefix: must not contain '{' or '}' (hash tags)",
    ),
    (
        "keys_prefix_dashes.yaml",
        "keys.prefix: 1-24 letters, digits or '_', starting with a letter",
    ),
    (
        "keys_prefix_too_long.yaml",
        "keys.prefix: 1-24 letters, digits or '_', starting with a letter",
    ),
    ("database_url_not_postgres.yaml", "database.url: must be a postgresql:// URL"),
    (
        "unset_env_var.yaml",
        "database.url: environment variable GATEWAY_TEST_NEVER_SET is not set",
    ),
    ("backend_without_type.yaml", "backends.local.type: required, a backend type name"),
    ("no_plans.yaml", "plans: at least one plan is required"),
    (
        "pool_max_below_min.yaml",
        "database.pool_max_size: must be >= pool_min_size and >= 1",
    ),
    ("section_not_mapping.yaml", "redis: must be a mapping"),
    (
        "workers_too_many.yaml",
        "server.workers: a number from 1 to 256, or 0 / 'auto' (one per CPU)",
    ),
    ("jwt_secret_too_short.yaml", "auth.jwt_secrets[0]: must be at least 32 bytes"),
    ("model_backend_twice.yaml", "models.local: a backend is listed twice"),
    ("on_failure_unknown.yaml", "redis.on_failure: 'closed' or 'open'"),
    ("pricing_unknown_model.yaml", "pricing.models.dall-e-3: unknown model"),
    (
        "pricing_bad_size.yaml",
        "pricing.models.local.sizes.big: a size is WIDTHxHEIGHT, e.g. 1024x1024",
    ),
    ("pricing_negative.yaml", "pricing.default_credits_per_image: must be >= 0"),
    (
        "billing_bad_url.yaml",
        "billing.events_url: must be an http(s):// URL (or empty: off)",
    ),
    (
        "plan_negative_credits.yaml",
        "plans.free.monthly_credits: must be >= 0, or unset: no credit limit",
    ),
]

# Backend options belong to the backend type: load_config accepts them, and building
# the backends (what `serve` and `check-config` do: gateway.startup.prepare) rejects them;
# so does a credential's variable that is not set.
BACKEND_ERROR_CASES = [
    ("backend_unknown_option.yaml", "backends.local.colour: unknown key"),
    ("backend_bad_size.yaml", "backends.local.sizes: 'big' is not 'WIDTHxHEIGHT'"),
    ("http_backend_without_base_url.yaml", "backends.remote.base_url: required, an http(s) URL"),
    (
        "backend_credential_unset.yaml",
        "backends.remote.api_key_env: environment variable GATEWAY_TEST_NEVER_SET is not set",
    ),
]


def test_every_fixture_file_is_used():
    used = {name for name, _ in ERROR_CASES + BACKEND_ERROR_CASES}
    used |= {"valid.yaml", "backend_unknown_type.yaml", "default_plan_list.yaml"}
    assert {p.name for p in CONFIGS.glob("*.yaml")} == used


@pytest.mark.parametrize(
    ("filename", "message"), ERROR_CASES, ids=[name for name, _ in ERROR_CASES]
)
def test_config_error_names_the_key(no_env_overrides: None, filename: str, message: str):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / filename)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("filename", "message"),
    BACKEND_ERROR_CASES,
    ids=[name for name, _ in BACKEND_ERROR_CASES],
)
def test_backend_option_error_names_the_key(no_env_overrides: None, filename: str, message: str):
    config = load_config(CONFIGS / filename)
    with pytest.raises(ConfigError) as info:
        prepare(config, environ={})
    assert str(info.value) == message


def test_unknown_backend_type_lists_the_known_types(no_env_overrides: None):
    config = load_config(CONFIGS / "backend_unknown_type.yaml")
    with pytest.raises(ConfigError) as info:
        Router(config, default_registry())
    message = str(info.value)
    head = "backends.gpu.type: unknown backend type 'comfyui' (known: "
    assert message.startswith(head), message
    assert message.endswith(")")
    known = message[len(head) : -1].split(", ")
    assert {"local", "http"} <= set(known)
    assert known == sorted(known)


def test_default_plan_written_as_a_list_is_a_config_error(no_env_overrides: None):
    with pytest.raises(ConfigError, match=r"^default_plan: "):
        load_config(CONFIGS / "default_plan_list.yaml")


@pytest.mark.parametrize("value", [["local"], {"name": "local"}])
def test_default_model_that_is_not_a_string_is_a_config_error(value: Any):
    with pytest.raises(ConfigError, match=r"^default_model: "):
        parse_config(with_change("default_model", value), {})


def test_missing_file_is_a_config_error(tmp_path: Path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("server:\n  port: [8080\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid YAML: ")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "server:\n  port: [8080\n",
            "line 3, column 1: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at line 2)",
        ),
        ("server:\n\tport: 8080\n", "line 2, column 1: found character '\\t' that cannot"),
        ('admin:\n  token: "abc\n', "line 3, column 1: found unexpected end of stream"),
    ],
    ids=["unclosed-list", "tab", "unclosed-quote"],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, where: str):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid YAML: {where}")
    assert "\n" not in str(info.value)  # one line


def test_a_key_given_twice_is_an_error_naming_the_line(tmp_path: Path):
    path = tmp_path / "twice.yaml"
    path.write_text(
        (CONFIGS / "valid.yaml")
        .read_text()
        .replace("  port: 8080\n", "  port: 8080\n  port: 9090\n")
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not valid YAML: line 5, column 3: key 'port' is given twice"


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path, no_env_overrides: None):
    path = tmp_path / "merge.yaml"
    text = (CONFIGS / "valid.yaml").read_text()
    text = text.replace(
        "  pro: {requests_per_minute: 600, images_per_day: 5000, max_images_per_request: 10}",
        "  pro: &pro {requests_per_minute: 600, images_per_day: 5000, max_images_per_request: 10}\n"
        "  team: {<<: *pro, images_per_day: 9000}",
    )
    path.write_text(text)
    team = load_config(path).plans["team"]
    assert team == PlanConfig(
        requests_per_minute=600, images_per_day=9000, max_images_per_request=10
    )


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("server:\n  host: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read: not UTF-8 text"


def test_a_document_that_is_not_a_mapping_is_a_config_error(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- server\n- plans\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "config: must be a mapping"


def test_an_empty_file_says_what_is_missing(tmp_path: Path, no_env_overrides: None):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "plans: required"


# -- unknown keys and bad values, in every section ---------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("servr", "servr: unknown key"),
        ("server.prot", "server.prot: unknown key"),
        ("database.uri", "database.uri: unknown key"),
        ("redis.prefix", "redis.prefix: unknown key"),
        ("keys.ttl", "keys.ttl: unknown key"),
        ("usage.flush_every", "usage.flush_every: unknown key"),
        ("auth.secret", "auth.secret: unknown key"),
        ("plans.free.images_per_dya", "plans.free.images_per_dya: unknown key"),
        ("plans.pro.burst", "plans.pro.burst: unknown key"),
    ],
)
def test_unknown_key_is_named_by_its_dotted_path(path: str, message: str):
    assert parse_error(with_change(path, 1)) == message


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("server.port", 65536, "server.port: must be between 1 and 65535"),
        ("server.port", -1, "server.port: must be between 1 and 65535"),
        ("server.port", "http", "server.port: must be a whole number"),
        ("server.port", True, "server.port: must be a whole number"),
        ("server.port", None, "server.port: must be a whole number"),
        ("server.host", 8080, "server.host: must be a string"),
        ("server.max_body_bytes", 0, "server.max_body_bytes: must be > 0"),
        (
            "server.header_read_timeout_seconds",
            0,
            "server.header_read_timeout_seconds: must be > 0",
        ),
        (
            "server.header_read_timeout_seconds",
            "fast",
            "server.header_read_timeout_seconds: must be a number",
        ),
        ("server.shutdown_timeout_seconds", -1, "server.shutdown_timeout_seconds: must be > 0"),
        (
            "server.shutdown_timeout_seconds",
            False,
            "server.shutdown_timeout_seconds: must be a number",
        ),
        ("plans.free.requests_per_minute", 0, "plans.free.requests_per_minute: must be > 0"),
        ("plans.free.requests_per_minute", -10, "plans.free.requests_per_minute: must be > 0"),
        ("plans.free.images_per_day", "50", "plans.free.images_per_day: must be a whole number"),
        ("plans.free.images_per_day", True, "plans.free.images_per_day: must be a whole number"),
        ("plans.pro.max_images_per_request", 0, "plans.pro.max_images_per_request: must be > 0"),
        ("database.pool_min_size", -1, "database.pool_min_size: must be >= 0"),
        ("database.pool_max_size", 0, "database.pool_max_size: must be >= pool_min_size and >= 1"),
        ("database.command_timeout_seconds", 0, "database.command_timeout_seconds: must be > 0"),
        ("database.url", "sqlite:///x.db", "database.url: must be a postgresql:// URL"),
        (
            "redis.url",
            "http://127.0.0.1:6379",
            "redis.url: must be a redis://, rediss://, unix://, redis+cluster:// or "
            "rediss+cluster:// URL",
        ),
        ("redis.url", "redis+cluster://a,b:1", "redis.url: 'a' is not host:port"),
        ("redis.url", "redis+cluster://a:1/2", "redis.url: a Redis Cluster has only database 0"),
        ("redis.cluster", "yes", "redis.cluster: must be true or false"),
        ("redis.key_prefix", "{gw}:", "redis.key_prefix: must not contain '{' or '}' (hash tags)"),
        ("redis.key_prefix", "gw}", "redis.key_prefix: must not contain '{' or '}' (hash tags)"),
        ("redis.max_connections", 0, "redis.max_connections: must be > 0"),
        ("keys.prefix", "", "keys.prefix: 1-24 letters, digits or '_', starting with a letter"),
        ("keys.prefix", "1nb_", "keys.prefix: 1-24 letters, digits or '_', starting with a letter"),
        (
            "keys.prefix",
            "nb live",
            "keys.prefix: 1-24 letters, digits or '_', starting with a letter",
        ),
        (
            "keys.prefix",
            "x" * 25,
            "keys.prefix: 1-24 letters, digits or '_', starting with a letter",
        ),
        ("keys.prefix", 42, "keys.prefix: must be a string"),
        ("keys.local_ttl_seconds", 0, "keys.local_ttl_seconds: must be > 0"),
        ("keys.local_ttl_seconds", "10s", "keys.local_ttl_seconds: must be a number"),
        ("keys.local_max_entries", 1.5, "keys.local_max_entries: must be a whole number"),
        ("keys.redis_ttl_seconds", -300, "keys.redis_ttl_seconds: must be > 0"),
        ("keys.negative_ttl_seconds", 0, "keys.negative_ttl_seconds: must be > 0"),
        ("usage.flush_interval_seconds", 0, "usage.flush_interval_seconds: must be > 0"),
        ("auth.jwt_secrets", "s3cret", "auth.jwt_secrets: must be a list"),
        ("auth.jwt_secrets", ["ok", 7], "auth.jwt_secrets[1]: must be a string"),
        ("auth.token_ttl_seconds", 0, "auth.token_ttl_seconds: must be > 0"),
        ("auth.bcrypt_cost", 3, "auth.bcrypt_cost: must be between 4 and 16"),
        ("auth.bcrypt_cost", 17, "auth.bcrypt_cost: must be between 4 and 16"),
        ("default_plan", "gold", "default_plan: unknown plan 'gold'"),
        ("default_model", "dall-e-3", "default_model: unknown model 'dall-e-3'"),
        ("server", [8080], "server: must be a mapping"),
        ("plans", ["free"], "plans: must be a mapping"),
        ("plans", {}, "plans: at least one plan is required"),
        ("plans.free", None, "plans.free: required"),
        ("backends", {}, "backends: at least one backend is required"),
        ("backends.local", {"type": ""}, "backends.local.type: required, a backend type name"),
        ("backends.local", {"type": 1}, "backends.local.type: required, a backend type name"),
        ("models", {}, "models: at least one model is required"),
        ("models.local", "nowhere", "models.local: unknown backend 'nowhere'"),
        ("models.local", ["local", "local"], "models.local: a backend is listed twice"),
        ("models.local", ["local", 5], "models.local[1]: must be a string"),
        (
            "models.local",
            [],
            "models.local: must be a backend name or a list of them (fallback order)",
        ),
        (
            "server.workers",
            257,
            "server.workers: a number from 1 to 256, or 0 / 'auto' (one per CPU)",
        ),
        (
            "server.workers",
            -1,
            "server.workers: a number from 1 to 256, or 0 / 'auto' (one per CPU)",
        ),
        ("server.workers", "many", "server.workers: must be a whole number"),
        (
            "server.upstream_max_connections_per_host",
            -1,
            "server.upstream_max_connections_per_host: must be >= 0",
        ),
        ("redis.on_failure", "maybe", "redis.on_failure: 'closed' or 'open'"),
        ("redis.on_failure", 1, "redis.on_failure: must be a string"),
        ("redis.socket_timeout_seconds", 0, "redis.socket_timeout_seconds: must be > 0"),
        ("logging.level", "verbose", "logging.level: one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("logging.format", "xml", "logging.format: 'json' or 'text'"),
        ("logging.access_log", "yes", "logging.access_log: must be true or false"),
        (
            "logging.access_log_flush_seconds",
            11,
            "logging.access_log_flush_seconds: must be from 0 to 10",
        ),
        (
            "logging.access_log_flush_seconds",
            -0.5,
            "logging.access_log_flush_seconds: must be from 0 to 10",
        ),
        ("admin.token", "short", "admin.token: must be at least 16 characters (or empty: off)"),
        ("auth.jwt_secrets", ["x" * 31], "auth.jwt_secrets[0]: must be at least 32 bytes"),
        (
            "auth.trusted_proxies",
            ["10.0.0.0/8", "proxy.internal"],
            "auth.trusted_proxies[1]: 'proxy.internal' is not an address or network",
        ),
        ("auth.max_keys_per_user", 0, "auth.max_keys_per_user: must be > 0"),
        ("usage.journal_dir", 5, "usage.journal_dir: must be a string"),
        ("backends.local.retries", -1, "backends.local.retries: must be >= 0"),
        ("backends.local.max_queue", "x", "backends.local.max_queue: must be a whole number"),
        (
            "backends.local.breaker_reset_seconds",
            0,
            "backends.local.breaker_reset_seconds: must be > 0",
        ),
        ("plans.free", "free", "plans.free: must be a mapping"),
        ("backends.local", "local", "backends.local: must be a mapping"),
        ("backends.local", None, "backends.local: required"),
    ],
)
def test_bad_value_is_named_by_its_dotted_path(path: str, value: Any, message: str):
    assert parse_error(with_change(path, value)) == message


def test_missing_required_sections_are_named():
    for section in ("plans", "backends", "models"):
        raw = valid_raw()
        del raw[section]
        assert parse_error(raw) == f"{section}: required"


@pytest.mark.parametrize("section", ["plans", "backends", "models"])
def test_names_in_named_sections_are_checked(section: str):
    raw = valid_raw()
    raw[section]["bad name!"] = copy.deepcopy(next(iter(raw[section].values())))
    assert parse_error(raw) == f"{section}.bad name!: names use letters, digits, '.', '_' and '-'"


def test_non_string_keys_are_rejected():
    raw = valid_raw()
    raw["plans"]["free"][5] = 1
    assert parse_error(raw) == "plans.free.5: keys must be strings"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "red"}, "backends.local.colour: unknown key"),
        ({"sizes": []}, "backends.local.sizes: must be a list of 'WIDTHxHEIGHT'"),
        ({"sizes": "256x256"}, "backends.local.sizes: must be a list of 'WIDTHxHEIGHT'"),
        ({"sizes": ["256x256", "256"]}, "backends.local.sizes: '256' is not 'WIDTHxHEIGHT'"),
        ({"timeout_seconds": 0}, "backends.local.timeout_seconds: must be a number > 0"),
        ({"timeout_seconds": True}, "backends.local.timeout_seconds: must be a number > 0"),
    ],
)
def test_local_backend_options_are_checked_when_the_backend_is_built(
    options: dict[str, Any], message: str
):
    config = parse_config(with_change("backends.local", {"type": "local", **options}), {})
    with pytest.raises(ConfigError) as info:
        Router(config, default_registry())
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "http://up/v1", "colour": "red"}, "backends.remote.colour: unknown key"),
        ({}, "backends.remote.base_url: required, an http(s) URL"),
        ({"base_url": "ftp://up/v1"}, "backends.remote.base_url: required, an http(s) URL"),
        (
            {"base_url": "http://up/v1", "model": 3},
            "backends.remote.model: must be a non-empty string",
        ),
    ],
)
def test_http_backend_options_are_checked_when_the_backend_is_built(
    options: dict[str, Any], message: str
):
    raw = with_change("backends.remote", {"type": "http", **options})
    config = parse_config(raw, {})
    with pytest.raises(ConfigError) as info:
        Router(config, default_registry())
    assert str(info.value) == message


def test_a_model_that_is_not_a_backend_name_is_an_error():
    for value in (5, None, {"backend": "local"}):
        message = parse_error(with_change("models.local", value))
        assert message.startswith("models.local: must be a backend name"), message


def test_valid_backend_options_are_accepted():
    raw = with_change(
        "backends.local", {"type": "local", "sizes": ["64x64", "128x96"], "timeout_seconds": 5}
    )
    raw["backends"]["remote"] = {
        "type": "http",
        "base_url": "https://images.internal/v1",
        "model": "sdxl",
        "api_key_env": "UPSTREAM_KEY",
        "timeout_seconds": 30,
    }
    raw["models"]["sdxl"] = "remote"
    router = Router(parse_config(raw, {}), default_registry())
    assert set(router.backends) == {"local", "remote"}
    found = router.for_model("sdxl")
    assert found is not None
    assert found[0] == "sdxl"
    default = router.for_model(None)
    assert default is not None
    assert default[0] == "local"
    assert router.for_model("no-such-model") is None


# -- ${VAR} and ${VAR:-default} ----------------------------------------------------------


def test_env_reference_is_substituted():
    raw = with_change("database.url", "postgresql://${PGUSER}@${PGHOST}:5432/${PGDB}")
    config = parse_config(raw, {"PGUSER": "app", "PGHOST": "db.internal", "PGDB": "images"})
    assert config.database.url == "postgresql://app@db.internal:5432/images"


def test_env_reference_with_default_uses_the_variable_when_set():
    raw = with_change("redis.key_prefix", "${GW_PREFIX:-gw:}")
    assert parse_config(raw, {"GW_PREFIX": "tenant7:"}).redis.key_prefix == "tenant7:"


def test_env_reference_with_default_uses_the_default_when_unset_or_empty():
    raw = with_change("redis.key_prefix", "${GW_PREFIX:-gw:}")
    assert parse_config(raw, {}).redis.key_prefix == "gw:"
    assert parse_config(raw, {"GW_PREFIX": ""}).redis.key_prefix == "gw:"


def test_env_reference_with_an_empty_default():
    raw = with_change("server.host", "127.0.0.1${HOST_SUFFIX:-}")
    assert parse_config(raw, {}).server.host == "127.0.0.1"


def test_env_reference_default_may_contain_colons_and_slashes():
    raw = with_change("database.url", "${DB:-postgresql://u:p@h:5433/d?sslmode=require}")
    assert parse_config(raw, {}).database.url == "postgresql://u:p@h:5433/d?sslmode=require"


def test_unset_env_reference_without_default_is_an_error_naming_the_key():
    raw = with_change("server.host", "${GATEWAY_HOST}")
    assert (
        parse_error(raw, {"OTHER": "x"})
        == "server.host: environment variable GATEWAY_HOST is not set"
    )


def test_unset_env_reference_in_a_plan_names_the_plan_key():
    raw = with_change("plans.free.images_per_day", "${FREE_IMAGES}")
    assert (
        parse_error(raw) == "plans.free.images_per_day: environment variable FREE_IMAGES is not set"
    )


def test_unset_env_reference_in_a_list_names_the_item():
    raw = with_change("auth.jwt_secrets", ["first", "${SECOND_SECRET}"])
    assert parse_error(raw) == "auth.jwt_secrets[1]: environment variable SECOND_SECRET is not set"


def test_env_values_are_strings_so_a_number_key_still_wants_a_number():
    raw = with_change("server.port", "${PORT:-8080}")
    assert parse_error(raw) == "server.port: must be a whole number"


def test_text_that_only_looks_like_a_reference_is_left_alone():
    raw = with_change("server.host", "$HOST")
    assert parse_config(raw, {"HOST": "x"}).server.host == "$HOST"


# -- DATABASE_URL, REDIS_URL, GATEWAY_JWT_SECRET -------------------------------------------

# Account-token secrets: long enough for any length rule the config may apply.
S_ENV = "env-secret-" + "e" * 40
S_NEW = "new-secret-" + "n" * 40
S_OLD = "old-secret-" + "o" * 40
S_OLDER = "older-secret-" + "x" * 40


def test_database_url_overrides_the_key():
    raw = with_change("database.url", "postgresql://file@127.0.0.1/file")
    config = parse_config(raw, {"DATABASE_URL": "postgresql://env@10.0.0.5:5432/env"})
    assert config.database.url == "postgresql://env@10.0.0.5:5432/env"
    assert config.database.pool_max_size == DatabaseConfig().pool_max_size


def test_database_url_overrides_even_without_a_database_section():
    raw = valid_raw()
    del raw["database"]
    config = parse_config(raw, {"DATABASE_URL": "postgresql://env@10.0.0.5:5432/env"})
    assert config.database.url == "postgresql://env@10.0.0.5:5432/env"


def test_redis_url_overrides_the_key_and_keeps_the_rest_of_the_section():
    config = parse_config(valid_raw(), {"REDIS_URL": "redis://10.0.0.6:6379/3"})
    assert config.redis.url == "redis://10.0.0.6:6379/3"
    assert config.redis.key_prefix == "gw:"


def test_empty_override_variables_are_ignored():
    config = parse_config(valid_raw(), {"DATABASE_URL": "", "REDIS_URL": ""})
    assert config.database.url == "postgresql://postgres@127.0.0.1:5432/gateway"
    assert config.redis.url == "redis://127.0.0.1:6379/0"


def test_overridden_values_are_still_validated():
    assert (
        parse_error(valid_raw(), {"DATABASE_URL": "mysql://root@db/x"})
        == "database.url: must be a postgresql:// URL"
    )
    assert (
        parse_error(valid_raw(), {"REDIS_URL": "memcached://x"})
        == "redis.url: must be a redis://, rediss://, unix://, redis+cluster:// or "
        "rediss+cluster:// URL"
    )


def test_overrides_apply_through_load_config(no_env_overrides: None, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@10.0.0.5/env")
    monkeypatch.setenv("REDIS_URL", "unix:///run/redis.sock")
    monkeypatch.setenv("GATEWAY_JWT_SECRET", S_ENV)
    config = load_config(CONFIGS / "valid.yaml")
    assert config.database.url == "postgresql://env@10.0.0.5/env"
    assert config.redis.url == "unix:///run/redis.sock"
    assert config.auth.jwt_secrets == (S_ENV,)


def test_jwt_secret_alone_becomes_the_only_secret():
    config = parse_config(valid_raw(), {"GATEWAY_JWT_SECRET": S_NEW})
    assert config.auth.jwt_secrets == (S_NEW,)


def test_jwt_secret_becomes_the_first_of_the_configured_secrets():
    raw = with_change("auth.jwt_secrets", [S_OLD, S_OLDER])
    config = parse_config(raw, {"GATEWAY_JWT_SECRET": S_NEW})
    assert config.auth.jwt_secrets == (S_NEW, S_OLD, S_OLDER)


def test_jwt_secret_already_listed_moves_to_the_front_once():
    raw = with_change("auth.jwt_secrets", [S_OLD, S_NEW])
    config = parse_config(raw, {"GATEWAY_JWT_SECRET": S_NEW})
    assert config.auth.jwt_secrets == (S_NEW, S_OLD)


def test_jwt_secret_keeps_the_other_auth_keys():
    raw = with_change("auth.token_ttl_seconds", 60)
    config = parse_config(raw, {"GATEWAY_JWT_SECRET": S_NEW})
    assert config.auth.token_ttl_seconds == 60


def test_without_the_variable_the_configured_secrets_stand():
    raw = with_change("auth.jwt_secrets", ["${JWT_A}", S_OLD])
    config = parse_config(raw, {"JWT_A": S_NEW, "GATEWAY_JWT_SECRET": ""})
    assert config.auth.jwt_secrets == (S_NEW, S_OLD)


@pytest.mark.parametrize("value", ["abc", 5], ids=["string", "int"])
def test_jwt_secrets_must_be_a_list_even_when_the_variable_is_set(value: Any):
    raw = with_change("auth.jwt_secrets", value)
    assert parse_error(raw, {"GATEWAY_JWT_SECRET": S_NEW}) == "auth.jwt_secrets: must be a list"


def test_workers_auto_means_one_per_cpu():
    assert parse_config(with_change("server.workers", "auto"), {}).server.workers == 0


def test_log_levels_are_read_in_any_case():
    assert parse_config(with_change("logging.level", "debug"), {}).logging.level == "debug"


def test_an_empty_jwt_secret_entry_is_dropped():
    raw = with_change("auth.jwt_secrets", ["${GATEWAY_JWT_SECRET:-}", S_OLD])
    assert parse_config(raw, {}).auth.jwt_secrets == (S_OLD,)


def test_a_model_may_name_one_backend_or_a_chain():
    raw = with_change("backends.spare", {"type": "local"})
    raw["models"] = {"one": "local", "chain": ["local", "spare"]}
    raw["default_model"] = "chain"
    config = parse_config(raw, {})
    assert dict(config.models) == {"one": ("local",), "chain": ("local", "spare")}


def test_backend_keys_are_split_into_options_and_resilience():
    raw = with_change(
        "backends.local", {"type": "local", "sizes": ["64x64"], "retries": 0, "max_queue": 7}
    )
    backend = parse_config(raw, {}).backends["local"]
    assert backend.name == "local"
    assert backend.type == "local"
    assert dict(backend.options) == {"sizes": ["64x64"]}
    assert (backend.resilience.retries, backend.resilience.max_queue) == (0, 7)
    assert backend.resilience.breaker_failures == 5  # the default


@pytest.mark.parametrize("key", ["name", "options"])
def test_backend_keys_that_name_struct_fields_are_still_options(key: str):
    """``name`` and ``options`` are not keys of a backend in config.yaml: its type gets them."""
    raw = with_change("backends.local", {"type": "local", key: "x"})
    config = parse_config(raw, {})
    assert config.backends["local"].name == "local"
    with pytest.raises(ConfigError) as info:
        prepare(config, dev=True, environ={})
    assert str(info.value) == f"backends.local.{key}: unknown key"


# -- the checks `serve` and `check-config` share: gateway.startup.prepare -----------------


def test_prepare_refuses_a_config_without_a_jwt_secret(no_env_overrides: None):
    config = load_config(CONFIGS / "valid.yaml")
    with pytest.raises(ConfigError) as info:
        prepare(config, environ={})
    assert str(info.value) == (
        "auth.jwt_secrets: a secret of at least 32 bytes is required "
        "(set GATEWAY_JWT_SECRET), or run in development mode (--dev)"
    )


def test_prepare_in_development_mode_generates_a_jwt_secret(no_env_overrides: None):
    config = load_config(CONFIGS / "valid.yaml")
    prepared = prepare(config, dev=True, environ={})
    assert prepared.generated_jwt_secret is True
    (secret,) = prepared.config.auth.jwt_secrets
    assert len(secret.encode()) >= 32
    assert prepared.config.plans == config.plans  # the rest is the config as loaded
    assert prepare(config, dev=True, environ={}).config.auth.jwt_secrets != (secret,)


def test_prepare_keeps_a_configured_jwt_secret_even_in_development_mode():
    config = parse_config(valid_raw(), {"GATEWAY_JWT_SECRET": S_NEW})
    for dev in (False, True):
        prepared = prepare(config, dev=dev, environ={})
        assert prepared.config is config
        assert prepared.generated_jwt_secret is False
        assert set(prepared.router.backends) == {"local"}


CREDENTIAL_BACKENDS = {
    "openai": ({"type": "openai", "api_key_env": "GW_CRED"}, ["api_key_env"]),
    "http": ({"type": "http", "base_url": "http://up/v1", "api_key_env": "GW_CRED"}, []),
    "gemini": ({"type": "gemini", "api_key_env": "GW_CRED"}, ["api_key_env"]),
    "replicate": (
        {"type": "replicate", "model": "owner/name", "api_key_env": "GW_CRED"},
        ["api_key_env"],
    ),
    "a1111": (
        {
            "type": "a1111",
            "base_url": "http://up",
            "username_env": "GW_CRED",
            "password_env": "GW_CRED_2",
        },
        ["username_env", "password_env"],
    ),
}


@pytest.mark.parametrize("kind", CREDENTIAL_BACKENDS)
def test_prepare_checks_every_backend_s_credential_variables(kind: str):
    options, _ = CREDENTIAL_BACKENDS[kind]
    raw = with_change("backends.remote", options)
    config = parse_config(raw, {"GATEWAY_JWT_SECRET": S_NEW})
    environ = {"GW_CRED": "user-or-key", "GW_CRED_2": "password"}
    prepare(config, environ=environ)  # all set: fine
    for name, env in (
        ("api_key_env", "GW_CRED"),
        ("username_env", "GW_CRED"),
        ("password_env", "GW_CRED_2"),
    ):
        if options.get(name) != env:
            continue
        missing = {k: v for k, v in environ.items() if k != env}
        for unset in (missing, {**missing, env: "  "}):
            with pytest.raises(ConfigError) as info:
                prepare(config, environ=unset)
            assert (
                str(info.value) == f"backends.remote.{name}: environment variable {env} is not set"
            )


def test_prepare_refuses_an_a1111_user_name_with_a_colon():
    raw = with_change("backends.remote", CREDENTIAL_BACKENDS["a1111"][0])
    config = parse_config(raw, {"GATEWAY_JWT_SECRET": S_NEW})
    with pytest.raises(ConfigError) as info:
        prepare(config, environ={"GW_CRED": "a:b", "GW_CRED_2": "pw"})
    assert str(info.value) == "backends.remote.username_env: the user name must not contain ':'"


def test_prepare_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch):
    raw = with_change("backends.remote", {"type": "openai", "api_key_env": "GW_TEST_PREPARE_KEY"})
    config = parse_config(raw, {"GATEWAY_JWT_SECRET": S_NEW})
    monkeypatch.delenv("GW_TEST_PREPARE_KEY", raising=False)
    with pytest.raises(ConfigError, match="GW_TEST_PREPARE_KEY is not set"):
        prepare(config)
    monkeypatch.setenv("GW_TEST_PREPARE_KEY", "sk-test")
    prepare(config)


# -- the structs: one place for each key's default, constraint and doc ---------------------


def _structs(cls: type[Any] = Config) -> list[type[Any]]:
    found = [cls]
    for hint in get_type_hints(cls, include_extras=True).values():
        for part in (hint, *_nested(hint)):
            if isinstance(part, type) and issubclass(part, Section) and part not in found:
                found += [c for c in _structs(part) if c not in found]
    return found


def _nested(hint: Any) -> list[Any]:
    out = []
    for arg in get_args(hint):
        if not isinstance(arg, msgspec.Meta):
            out += [arg, *_nested(arg)]
    return out


def test_every_key_is_documented_on_its_field():
    undocumented = []
    for cls in _structs():
        for name, hint in get_type_hints(cls, include_extras=True).items():
            if isinstance(hint, type) and issubclass(hint, Section):
                continue  # a section: its struct documents its keys
            metas = hint.__metadata__ if get_origin(hint) is Annotated else ()
            if not any(isinstance(m, msgspec.Meta) and m.description for m in metas):
                undocumented.append(f"{cls.__name__}.{name}")
    assert undocumented == []


def test_every_struct_is_frozen_and_strict():
    for cls in _structs():
        assert cls.__struct_config__.frozen, cls
        assert cls.__struct_config__.forbid_unknown_fields, cls


class EgressConfig(Section, frozen=True, kw_only=True):
    """A section another change may add: one struct..."""

    proxy: Annotated[str, msgspec.Meta(description="An outbound proxy.")] = ""
    max_mb: Annotated[int, msgspec.Meta(gt=0, description="A download limit.")] = 5


class WithEgress(Config, frozen=True, kw_only=True):
    """...and one field."""

    egress: EgressConfig = EgressConfig()


def test_a_new_section_is_strict_and_named_by_its_key():
    raw = valid_raw()
    raw["models"] = {"local": ["local"]}
    raw["backends"]["local"] |= {"name": "local", "options": {}}
    assert decode({**raw, "egress": {"max_mb": 9}}, WithEgress).egress.max_mb == 9
    for body, message in (
        ({"max_md": 9}, "egress.max_md: unknown key"),
        ({"max_mb": 0}, "egress.max_mb: must be > 0"),
    ):
        with pytest.raises(ConfigError) as info:
            decode({**raw, "egress": body}, WithEgress)
        assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"nonesuch": "never"}, "model_fallback.nonesuch: unknown model"),
        ({"local": "sometimes"}, "model_fallback.local: "),
    ],
)
def test_model_fallback_names_a_model_and_a_policy(value: Any, message: str):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_config(with_change("model_fallback", value), {})
    config = parse_config(with_change("model_fallback", {"local": "never"}), {})
    assert config.model_fallback["local"] == "never"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"allow": ["not a network"]}, "egress.allow[0]: "),
        ({"allow": "10.0.0.0/8"}, "egress.allow: "),
        ({"url": "ftp://x"}, None),
    ],
)
def test_egress_is_a_strict_section(value: Any, message: str | None):
    with pytest.raises(ConfigError, match="^" + re.escape(message or "egress.url: unknown key")):
        parse_config(with_change("egress", value), {})


def test_a_configs_repr_shows_no_secret():
    raw = with_change("auth", {"jwt_secrets": ["j" * 40]})
    raw["admin"] = {"token": "admin-token-value"}
    raw["database"] = {"url": "postgresql://gw:db-password@db.internal/gateway"}
    raw["storage"] = {"url": "memory://", "signing_secrets": ["s" * 40]}
    text = repr(parse_config(raw, {}))
    for secret in ("j" * 40, "admin-token-value", "db-password", "s" * 40):
        assert secret not in text
    assert "postgresql://gw:***@db.internal/gateway" in text


def test_a_cluster_url_or_the_cluster_flag_runs_on_a_redis_cluster():
    nodes = "redis+cluster://u:secret@10.0.0.1:7000,10.0.0.2:7001"
    assert parse_config(merge(valid_raw(), {"redis": {"url": nodes}}), {}).redis.in_cluster
    flagged = merge(valid_raw(), {"redis": {"url": "redis://10.0.0.1:7000", "cluster": True}})
    assert parse_config(flagged, {}).redis.in_cluster
    assert not parse_config(valid_raw(), {}).redis.in_cluster
