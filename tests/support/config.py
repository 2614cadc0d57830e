"""The tests' configuration: the servers they use, the secrets they share, merging."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ADMIN_TOKEN",
    "JWT_SECRET",
    "KEY_PREFIX",
    "REDIS_URL",
    "SERVER_DATABASE_URL",
    "base_raw_config",
    "merge",
    "write_config",
]

SERVER_DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/gateway")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = "nb_test_"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"


def base_raw_config(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    return {
        "server": {"max_body_bytes": 65536},
        "database": {"url": database_url, "pool_min_size": 1, "pool_max_size": 5},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "keys": {"prefix": KEY_PREFIX},
        "usage": {"flush_interval_seconds": 3600},  # tests flush explicitly
        # A test's gateway stops at once: a job still running is handed back.
        "jobs": {"shutdown_grace_seconds": 0},
        "plans": {
            "free": {"requests_per_minute": 10, "images_per_day": 50, "max_images_per_request": 4},
            "pro": {
                "requests_per_minute": 600,
                "images_per_day": 5000,
                "max_images_per_request": 10,
            },
        },
        "default_plan": "free",
        "backends": {"local": {"type": "local"}},
        "models": {"local": "local"},
        "default_model": "local",
        "auth": {
            "jwt_secrets": [JWT_SECRET],
            "bcrypt_cost": 4,
            "trusted_proxies": ["10.0.0.0/8"],
        },
        "admin": {"token": ADMIN_TOKEN},
        # Stored images go under the run's own temporary directory, never the checkout.
        "storage": {"url": f"file://{os.environ.get('TMPDIR', '/tmp')}/stored-images"},  # noqa: S108
    }


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path
