"""G, the gateway under test: its database, keys, Redis, config and process.

* a private database ``gw_bench_<random>`` on the ``DATABASE_URL`` server, migrated
  with :func:`gateway.migrate.apply` and dropped at the end;
* API keys written straight into Postgres (the same rows ``issue_key`` writes);
* a Redis of its own (a private ``redis-server`` when the binary is installed, so that
  ``INFO commandstats`` counts only the gateway's commands; else ``REDIS_URL``) and a
  private key prefix either way;
* ``python -m gateway serve --config <generated yaml>`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import secrets
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import psycopg
import redis
import yaml

from bench.constant_rate import BODY
from bench.procs import Child, Children, free_port, server_command
from gateway import migrate
from gateway.db.pool import split_database_url
from gateway.keys.format import display_prefix, generate_key, hash_key

__all__ = [
    "BenchDatabase",
    "BenchRedis",
    "backend_type",
    "create_keys",
    "egress_supported",
    "gateway_config",
    "image_gateway_config",
    "start_gateway",
    "warm",
    "workers_supported",
]

ROOT = Path(__file__).resolve().parent.parent
KEY_PREFIX = "nb_live_"
#: Limits no benchmark can reach: nothing is ever refused.
UNREACHABLE = 1_000_000_000
KEYS_PER_USER = 10


def backend_type() -> str:
    """``openai`` once that backend type is registered, else ``http`` (same wire format)."""
    from gateway.backends.registry import default_registry

    return "openai" if "openai" in default_registry().types else "http"


def workers_supported() -> bool:
    from gateway.config import ServerConfig

    return hasattr(ServerConfig(), "workers")  # a dataclass before, a msgspec Struct now


class BenchDatabase:
    """A private database on the server ``DATABASE_URL`` names; :meth:`drop` removes it."""

    def __init__(self, server_url: str) -> None:
        admin_url, _ = split_database_url(server_url)
        self.admin_url = admin_url
        self.name = f"gw_bench_{secrets.token_hex(4)}"
        self.url = admin_url.rsplit("/", 1)[0] + "/" + self.name
        self.created = False

    def create(self) -> None:
        self.created = True  # from here on, drop() must run
        migrate.apply(self.url, ROOT / "migrations")

    def drop(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False

    def server_version(self) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"


class BenchRedis:
    """The gateway's Redis: a private server when possible, else ``REDIS_URL``."""

    def __init__(self, shared_url: str, children: Children, workdir: Path, private: bool) -> None:
        self.prefix = f"gwbench-{secrets.token_hex(4)}:"
        self.private = bool(private and shutil.which("redis-server"))
        self._shared_url = shared_url
        self._children = children
        self._workdir = workdir
        self.child: Child | None = None
        self.url = shared_url

    def start(self) -> None:
        if not self.private:
            return
        port = free_port()
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self._workdir)]
        self.child = self._children.start("redis-server", argv, self._workdir / "redis.log")
        self.url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if not self.child.alive():
                        raise RuntimeError(
                            f"redis-server exited:\n{self.child.log_tail()}"
                        ) from None
                    time.sleep(0.025)
            raise RuntimeError("redis-server did not start")
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)

    def version(self) -> str:
        with self.client() as client:
            return str(client.info("server").get("redis_version", "unknown"))

    def clean(self) -> None:
        """Delete the prefix's keys (a private server is simply stopped with the rest)."""
        if self.private:
            return
        with self.client() as client:
            batch = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            for i in range(0, len(batch), 1000):
                client.delete(*batch[i : i + 1000])


async def _create_keys(url: str, count: int) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        users = [uuid.uuid4() for _ in range(math.ceil(count / KEYS_PER_USER))]
        keys = [generate_key(KEY_PREFIX) for _ in range(count)]
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO users (id, email, plan) VALUES ($1, $2, 'bench')",
                [(u, f"bench-{u.hex}@example.com") for u in users],
            )
            await conn.executemany(
                "INSERT INTO api_keys (user_id, key_hash, prefix, name) VALUES ($1, $2, $3, $4)",
                [
                    (users[i // KEYS_PER_USER], hash_key(k), display_prefix(k, KEY_PREFIX), "bench")
                    for i, k in enumerate(keys)
                ],
            )
        return keys
    finally:
        await conn.close()


def create_keys(url: str, count: int) -> list[str]:
    """``count`` active keys on plan ``bench`` (10 per user), written straight to Postgres."""
    return asyncio.run(_create_keys(url, count))


#: ``usage.flush_interval_seconds`` of the gateways measured (the gateway's default).
FLUSH_INTERVAL_S = 1.0
#: Gn's: no flush within a run (it flushes once, when stopped).
HELD_FLUSH_INTERVAL_S = 86400.0
#: Added to the bench's Redis prefix for Gn, whose counts no other gateway may flush.
HELD_PREFIX = "held:"


def gateway_config(
    *,
    port: int,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    upstream_url: str,
    backend: str,
    workers: int | None,
    local_ttl: float | None,
    access_log: bool = False,
    flush_interval: float = FLUSH_INTERVAL_S,
    credits: bool = False,
) -> dict[str, Any]:
    """The gateway's config for a run. Its access log is off unless ``access_log``: B1
    writes none either (the issue's target compares the same server settings); the
    report measures the gateway with it on too (Gl). ``flush_interval`` is
    ``usage.flush_interval_seconds`` (:data:`HELD_FLUSH_INTERVAL_S` for the diagnostic Gn).
    ``credits``: the plan has a credit allowance no run spends, so every admission also
    checks and charges credits (an image costs 1)."""
    keys: dict[str, Any] = {"prefix": KEY_PREFIX}
    if local_ttl is not None:
        keys["local_ttl_seconds"] = local_ttl
    server: dict[str, Any] = {"host": "127.0.0.1", "port": port, "shutdown_timeout_seconds": 5}
    if workers is not None:
        server["workers"] = workers
    return {
        "server": server,
        "database": {"url": database_url},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "keys": keys,
        "usage": {"flush_interval_seconds": flush_interval},
        "logging": {"access_log": access_log},
        "auth": {"jwt_secrets": [secrets.token_urlsafe(48)]},
        "plans": {
            "bench": {
                "requests_per_minute": UNREACHABLE,
                "images_per_day": UNREACHABLE,
                "max_images_per_request": 4,
                **({"monthly_credits": UNREACHABLE} if credits else {}),
            }
        },
        "default_plan": "bench",
        "backends": {
            "upstream": {
                "type": backend,
                "base_url": upstream_url,
                "timeout_seconds": 30,
                "sizes": ["256x256"],
            }
        },
        "models": {"bench": "upstream"},
        "default_model": "bench",
    }


#: The image workload asks for this size (the gateway's default).
IMAGE_SIZE = "1024x1024"
#: The egress policy (a section the gateway does not have yet) will refuse downloads from
#: loopback unless ``egress.allow`` lists it, and the url variant's fake upstream serves
#: its images on 127.0.0.1. Added to that variant's G config only when ``gateway.config``
#: knows an ``egress`` section (:func:`egress_supported`).
URL_VARIANT_EGRESS = {"egress": {"allow": ["127.0.0.1/32"]}}


def egress_supported() -> bool:
    """Whether the gateway's config has an ``egress`` section (unknown keys are errors)."""
    from gateway.config import Config

    return "egress" in {f.name for f in msgspec.structs.fields(Config)}


def image_gateway_config(
    *, variant: str, upstream_connections: int, upstream_timeout: float, **common: Any
) -> dict[str, Any]:
    """G's config for the image workload: :func:`gateway_config` (``common`` are its
    arguments) asking for :data:`IMAGE_SIZE`, with ``server.upstream_max_connections`` of
    ``upstream_connections`` (B1's session gets the same limit) and, for the ``url``
    variant, :data:`URL_VARIANT_EGRESS` when the gateway knows that section."""
    raw = gateway_config(**common)
    raw["server"]["upstream_max_connections"] = upstream_connections
    backend = raw["backends"]["upstream"]
    backend["sizes"] = [IMAGE_SIZE]
    backend["timeout_seconds"] = upstream_timeout
    if variant == "url" and egress_supported():
        raw.update(copy.deepcopy(URL_VARIANT_EGRESS))
    return raw


def start_gateway(
    children: Children,
    name: str,
    raw_config: dict[str, Any],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
) -> Child:
    """``python -m gateway serve`` with ``raw_config``; ``env``: more environment
    variables (those the config's ``*_env`` keys name)."""
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(raw_config, sort_keys=False))
    environ = {
        k: v for k, v in os.environ.items() if k not in ("GATEWAY_CONFIG", "GATEWAY_JWT_SECRET")
    }
    environ.update(env or {})
    # These override the config's keys: point them at the bench's own database and Redis.
    environ["DATABASE_URL"] = raw_config["database"]["url"]
    environ["REDIS_URL"] = raw_config["redis"]["url"]
    environ["PYTHONUNBUFFERED"] = "1"
    argv = server_command("-m", "gateway", "serve", "--config", str(config_path))
    return children.start(name, argv, workdir / f"{name}.log", env=environ, cwd=ROOT)


async def _warm(url: str, keys: list[str], concurrency: int, repeats: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    queue = [k for _ in range(repeats) for k in keys]
    position = iter(range(len(queue)))
    timeout = aiohttp.ClientTimeout(total=30)
    # force_close for repeats > 1: each repetition may land on another worker process.
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=repeats > 1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def worker() -> None:
            for i in position:
                headers = {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {queue[i]}",
                }
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def warm(url: str, keys: list[str], *, concurrency: int = 32, repeats: int = 1) -> Counter[int]:
    """One request per key (``repeats`` times); the statuses seen."""
    return asyncio.run(_warm(url, keys, concurrency, repeats))
