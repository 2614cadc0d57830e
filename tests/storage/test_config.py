"""The ``storage:`` section: defaults, and one exact message per mistake."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError
from gateway.storage import StorageConfig, parse_storage_config
from gateway.storage.config import signing_secrets, store_options

GOOD_SECRET = "s" * 32


def test_defaults():
    config = parse_storage_config(None, {})
    assert config == StorageConfig(url="file://./.data/images")
    assert (config.url_ttl_seconds, config.retention_hours) == (3600, 24.0)
    assert (config.public_base_url, config.signing_secrets, config.presign) == ("", (), False)
    assert dict(config.options) == {}


def test_the_data_dir_comes_from_the_environment():
    config = parse_storage_config({}, {"GATEWAY_DATA_DIR": "/var/lib/gateway"})
    assert config.url == "file:///var/lib/gateway/images"


def test_a_full_section():
    config = parse_storage_config(
        {
            "url": "s3://bucket/images",
            "options": {
                "endpoint": "https://s3.example.com",
                "region": "eu-west-1",
                "access_key_id_env": "KEY_ID",
                "secret_access_key_env": "KEY_SECRET",
                "client_options": {"timeout": "10s"},
            },
            "url_ttl_seconds": 600,
            "retention_hours": 1,
            "public_base_url": "https://img.example.com/",
            "signing_secrets": ["", GOOD_SECRET, "t" * 40],
            "presign": True,
        },
        {"KEY_ID": "id", "KEY_SECRET": "the-s3-secret"},
    )
    assert config.url == "s3://bucket/images"
    assert config.public_base_url == "https://img.example.com"
    assert config.signing_secrets == (GOOD_SECRET, "t" * 40)  # an unset "${VAR:-}" is dropped
    assert config.presign
    # The S3 secret stays in the environment; the signing secrets are not in the repr.
    assert "the-s3-secret" not in repr(config)
    assert GOOD_SECRET not in repr(config)
    assert store_options(config.options, {"KEY_ID": "id", "KEY_SECRET": "the-s3-secret"}) == {
        "endpoint": "https://s3.example.com",
        "region": "eu-west-1",
        "access_key_id": "id",
        "secret_access_key": "the-s3-secret",
        "client_options": {"timeout": "10s"},
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "storage: must be a mapping"),
        ({"ur": "memory://"}, "storage.ur: unknown key"),
        (
            {"url": "images"},
            "storage.url: must be a URL such as file://./.data/images or s3://bucket",
        ),
        (
            {"url": "ftp://x"},
            "storage.url: unsupported scheme 'ftp'; use file, s3, gs, az or memory",
        ),
        ({"url": "file://"}, "storage.url: a file:// URL needs a directory"),
        ({"options": []}, "storage.options: must be a mapping"),
        (
            {"url": "memory://", "options": {"region": "x"}},
            "storage.options: a memory:// store takes no options",
        ),
        (
            {"url": "s3://b", "options": {"secret_access_key": "inline"}},
            "storage.options.secret_access_key: secrets come from the environment: "
            "use secret_access_key_env: VAR",
        ),
        (
            {"url": "az://account/container", "options": {"account_key": "inline"}},
            "storage.options.account_key: secrets come from the environment: "
            "use account_key_env: VAR",
        ),
        (
            {"url": "s3://b", "options": {"session_token": "inline"}},
            "storage.options.session_token: secrets come from the environment: "
            "use session_token_env: VAR",
        ),
        (
            {"url": "s3://b", "options": {"secret_access_key_env": "NOT_SET"}},
            "storage.options.secret_access_key_env: environment variable NOT_SET is not set",
        ),
        (
            {"url": "s3://b", "options": {"secret_access_key_env": 5}},
            "storage.options.secret_access_key_env: must name an environment variable",
        ),
        (
            {"url": "s3://b", "options": {"region": ["a"]}},
            "storage.options.region: must be a string, number or boolean",
        ),
        (
            {"url": "s3://b", "options": {"client_options": "x"}},
            "storage.options.client_options: must be a mapping",
        ),
        ({"url_ttl_seconds": 0}, "storage.url_ttl_seconds: must be > 0"),
        ({"url_ttl_seconds": 1.5}, "storage.url_ttl_seconds: must be a whole number"),
        ({"url_ttl_seconds": True}, "storage.url_ttl_seconds: must be a whole number"),
        (
            {"retention_hours": -1},
            "storage.retention_hours: must be a number >= 0 (0: never swept)",
        ),
        (
            {"retention_hours": 1, "url_ttl_seconds": 3601},
            "storage.url_ttl_seconds: must not be longer than storage.retention_hours "
            "(a link would outlive its image)",
        ),
        (
            {"public_base_url": "img.example.com"},
            "storage.public_base_url: must be an http:// or https:// URL",
        ),
        ({"public_base_url": 5}, "storage.public_base_url: must be a string"),
        ({"signing_secrets": "x"}, "storage.signing_secrets: must be a list"),
        (
            {"signing_secrets": [GOOD_SECRET, "short"]},
            "storage.signing_secrets[1]: must be at least 32 bytes",
        ),
        ({"signing_secrets": [5]}, "storage.signing_secrets[0]: must be a string"),
        ({"presign": "yes"}, "storage.presign: must be true or false"),
        (
            {"presign": True},
            "storage.presign: only an s3:// store can presign links",
        ),
    ],
)
def test_errors_name_the_key(raw: Any, message: str):
    with pytest.raises(ConfigError) as caught:
        parse_storage_config(raw, {})
    assert str(caught.value) == message


def test_retention_zero_leaves_any_ttl():
    config = parse_storage_config({"retention_hours": 0, "url_ttl_seconds": 10**6}, {})
    assert config.retention_hours == 0


def test_signing_secrets_are_required_outside_development_mode():
    with pytest.raises(ConfigError) as caught:
        signing_secrets(StorageConfig(), dev=False)
    assert str(caught.value).startswith("storage.signing_secrets: a secret of at least 32 bytes")
    generated = signing_secrets(StorageConfig(), dev=True)
    assert len(generated) == 1
    assert len(generated[0]) >= 32
    assert signing_secrets(StorageConfig(signing_secrets=(GOOD_SECRET,)), dev=True) == (
        GOOD_SECRET.encode(),
    )
