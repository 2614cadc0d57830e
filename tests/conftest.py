"""Shared fixtures: a private database and Redis namespace per run, apps, keys, upstreams.

Every run creates its own Postgres database (dropped at the end) on the server named
by ``DATABASE_URL``, its own Redis key prefix on ``REDIS_URL`` and its own temporary
directory (removed at the end), so runs never touch each other's or a developer's data.
Tests that must flush or restart Redis start a private ``redis-server`` of their own.

Only fixtures live here; what they are built from is in :mod:`tests.support`.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import migrate
from gateway.app import create_app
from gateway.config import Config, parse_config
from gateway.db.pool import split_database_url
from gateway.db.users import create_user
from gateway.keys.issue import issue_key
from tests.support.accounts import RELAXED
from tests.support.config import (
    KEY_PREFIX,
    REDIS_URL,
    SERVER_DATABASE_URL,
    base_raw_config,
    merge,
)
from tests.support.gateway import Gateway, IssuedKey, MakeGateway, MakeKey
from tests.support.paths import ROOT
from tests.support.processes import Served, free_port, served_gateway
from tests.support.redis import PrivateRedis
from tests.support.redis_cluster import LocalCluster
from tests.support.upstreams import FakeUpstream, serve_fake_upstream

#: The run's own temporary directory, for it and every gateway it starts (journals,
#: metrics files, pytest's tmp_path): removed when the run ends.
RUN_TMP = tempfile.mkdtemp(prefix="gateway-tests-")
os.chmod(RUN_TMP, 0o711)  # noqa: S103 - others may pass through: a private Postgres runs as postgres
os.environ["TMPDIR"] = RUN_TMP
tempfile.tempdir = None  # forget a cached earlier answer


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(RUN_TMP, ignore_errors=True)


# -- the run's private database and Redis namespace -----------------------------------


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server_url, _ = split_database_url(SERVER_DATABASE_URL)
    name = f"gw_test_{os.getpid()}_{secrets.token_hex(4)}"
    url = server_url.rsplit("/", 1)[0] + "/" + name
    migrate.apply(url, ROOT / "migrations")
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"gwtest-{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def raw_config(database_url: str, redis_prefix: str) -> dict[str, Any]:
    return base_raw_config(database_url, REDIS_URL, redis_prefix)


@pytest.fixture
def config(raw_config: dict[str, Any]) -> Config:
    return parse_config(raw_config, {})


# -- apps --------------------------------------------------------------------------


@pytest.fixture
async def make_gateway(raw_config: dict[str, Any]) -> AsyncIterator[MakeGateway]:
    """Start gateway apps on real sockets; ``make_gateway(extra_config, **create_app_kw)``."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(extra: dict[str, Any] | None = None, **kwargs: Any) -> Gateway:
        config = parse_config(merge(raw_config, extra or {}), {})
        client = TestClient(TestServer(create_app(config, **kwargs)))
        await client.start_server()
        clients.append(client)
        return Gateway(client)

    yield make
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway()


@pytest.fixture
def make_app(make_gateway: MakeGateway, raw_config: dict[str, Any]) -> MakeGateway:
    """Gateways in a Redis namespace of this test's own (inside the run's, so it is
    cleaned up with it), with per-IP account budgets that only brute-force tests meet:
    127.0.0.1's budgets are not shared with other tests."""
    prefix = f"{raw_config['redis']['key_prefix']}{uuid.uuid4().hex[:10]}:"
    relaxed = merge(RELAXED, {"redis": {"key_prefix": prefix}})

    async def make(extra: dict[str, Any] | None = None, **kwargs: Any) -> Gateway:
        return await make_gateway(merge(relaxed, extra or {}), **kwargs)

    return make


@pytest.fixture
async def app(make_app: MakeGateway) -> Gateway:
    return await make_app()


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_prefix: str
) -> AsyncIterator[Served]:
    """A real ``gateway serve`` process per test module, for raw-socket tests."""
    raw = base_raw_config(database_url, REDIS_URL, redis_prefix)
    directory = tmp_path_factory.mktemp("served")
    async with served_gateway(directory, raw, redis_prefix) as gateway:
        yield gateway


# -- data --------------------------------------------------------------------------


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def make_key(db: asyncpg.Connection) -> MakeKey:
    """Issue a key straight into Postgres, for a new user of ``plan``."""

    async def make(
        plan: str = "free",
        *,
        requests_per_minute: int | None = None,
        images_per_day: int | None = None,
        expires_at: dt.datetime | None = None,
        user_active: bool = True,
    ) -> IssuedKey:
        user = await create_user(db, f"user-{uuid.uuid4().hex[:12]}@example.com", plan)
        if not user_active:
            await db.execute("UPDATE users SET is_active = false WHERE id = $1", user["id"])
        key, row = await issue_key(
            db, user_id=user["id"], prefix=KEY_PREFIX, name="test", expires_at=expires_at
        )
        if requests_per_minute is not None or images_per_day is not None:
            await db.execute(
                "UPDATE api_keys SET requests_per_minute = $2, images_per_day = $3 WHERE id = $1",
                row["id"],
                requests_per_minute,
                images_per_day,
            )
        return IssuedKey(key=key, key_id=row["id"], user_id=user["id"])

    return make


# -- upstreams and private servers -------------------------------------------------------


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    async with serve_fake_upstream() as upstream:
        yield upstream


@pytest.fixture
async def second_upstream() -> AsyncIterator[FakeUpstream]:
    async with serve_fake_upstream() as upstream:
        yield upstream


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with tempfile.TemporaryDirectory() as directory:
        server = PrivateRedis(free_port(), directory)
        server.start()
        yield server
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A Redis Cluster of the run's own (three primaries, three replicas), started once."""
    with tempfile.TemporaryDirectory() as directory:
        cluster = LocalCluster(Path(directory))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
