"""Shared fixtures: a private database and Redis namespace per run, apps, keys, upstreams.

Every run creates its own Postgres database (dropped at the end) on the server named
by ``DATABASE_URL``, its own Redis key prefix on ``REDIS_URL`` and its own temporary
directory (removed at the end), so runs never touch each other's or a developer's data.
Tests that must flush or restart Redis start a private ``redis-server`` of their own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
import redis
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import migrate
from gateway.app import create_app
from gateway.backends.local import render_png
from gateway.config import Config, parse_config
from gateway.db.pool import split_database_url
from gateway.db.users import create_user
from gateway.keys.issue import issue_key
from gateway.services import SERVICES, Services

ROOT = Path(__file__).resolve().parent.parent

#: The run's own temporary directory, for it and every gateway it starts (journals,
#: metrics files, pytest's tmp_path): removed when the run ends.
RUN_TMP = tempfile.mkdtemp(prefix="gateway-tests-")
os.chmod(RUN_TMP, 0o711)  # noqa: S103 - others may pass through: a private Postgres runs as postgres
os.environ["TMPDIR"] = RUN_TMP
tempfile.tempdir = None  # forget a cached earlier answer


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(RUN_TMP, ignore_errors=True)


SERVER_DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/gateway")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = "nb_test_"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"


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


def base_raw_config(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    return {
        "server": {"max_body_bytes": 65536},
        "database": {"url": database_url, "pool_min_size": 1, "pool_max_size": 5},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "keys": {"prefix": KEY_PREFIX},
        "usage": {"flush_interval_seconds": 3600},  # tests flush explicitly
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
    }


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def raw_config(database_url: str, redis_prefix: str) -> dict[str, Any]:
    return base_raw_config(database_url, REDIS_URL, redis_prefix)


@pytest.fixture
def config(raw_config: dict[str, Any]) -> Config:
    return parse_config(raw_config, {})


# -- apps --------------------------------------------------------------------------


@dataclass
class Gateway:
    """A running gateway app and a client for it."""

    client: TestClient[web.Request, web.Application]

    @property
    def services(self) -> Services:
        return self.client.app[SERVICES]  # type: ignore[index]

    async def generate(self, key: str | None, **body: Any) -> Any:
        body.setdefault("prompt", "a lighthouse at dawn")
        body.setdefault("size", "256x256")
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return await self.client.post("/v1/images/generations", json=body, headers=headers)

    async def flush(self) -> None:
        await self.services.flusher.flush()


MakeGateway = Callable[..., Awaitable[Gateway]]


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
    relaxed = {
        "auth": {"register_per_minute_per_ip": 10_000, "login_per_minute_per_ip": 10_000},
        "redis": {"key_prefix": prefix},
    }

    async def make(extra: dict[str, Any] | None = None, **kwargs: Any) -> Gateway:
        return await make_gateway(merge(relaxed, extra or {}), **kwargs)

    return make


@pytest.fixture
async def app(make_app: MakeGateway) -> Gateway:
    return await make_app()


# -- data --------------------------------------------------------------------------


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@dataclass
class IssuedKey:
    key: str
    key_id: uuid.UUID
    user_id: uuid.UUID


MakeKey = Callable[..., Awaitable[IssuedKey]]


@pytest.fixture
async def make_key(db: asyncpg.Connection) -> MakeKey:
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


async def usage_rows(db: asyncpg.Connection, key_id: uuid.UUID) -> dict[dt.date, int]:
    rows = await db.fetch("SELECT usage_date, image_count FROM usage WHERE api_key_id = $1", key_id)
    return {r["usage_date"]: r["image_count"] for r in rows}


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# -- a fake upstream that speaks the gateway's own (OpenAI Images) wire format -----------


@dataclass
class FakeUpstream:
    """An aiohttp server answering ``POST /v1/images/generations``.

    ``mode``: ``ok`` (n images), ``short`` (n - 1 images), ``fail`` (HTTP 500),
    ``garbage`` (200 with a non-JSON body), ``hang`` (waits until ``release`` is set),
    ``reset`` (drops the connection without answering).
    """

    mode: str = "ok"
    #: Answer the next ``fail_first`` requests with ``fail_status`` (and ``Retry-After``).
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.fail_first > 0:
            self.fail_first -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response(
                {"error": {"message": "busy"}}, status=self.fail_status, headers=headers
            )
        if self.mode == "fail":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if self.mode == "reset":
            assert request.transport is not None
            request.transport.abort()  # the connection dies with no answer
            return web.Response()
        if self.mode == "garbage":
            return web.Response(text="<html>oops</html>")
        if self.mode == "hang":
            await self.release.wait()
        n = body["n"] - (1 if self.mode == "short" else 0)
        width, height = (int(v) for v in body["size"].split("x"))
        data = [
            {"b64_json": base64.b64encode(render_png(body["prompt"], i, width, height)).decode()}
            for i in range(n)
        ]
        return web.json_response({"created": 0, "data": data})


@contextlib.asynccontextmanager
async def serve_images_endpoint(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A server answering ``POST /v1/images/generations`` with ``handler``; its base URL."""
    app = web.Application()
    app.router.add_post("/v1/images/generations", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/v1"
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def serve_fake_upstream() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    try:
        async with serve_images_endpoint(upstream.handle) as url:
            upstream.url = url
            yield upstream
    finally:
        upstream.release.set()


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    async with serve_fake_upstream() as upstream:
        yield upstream


@pytest.fixture
async def second_upstream() -> AsyncIterator[FakeUpstream]:
    async with serve_fake_upstream() as upstream:
        yield upstream


def upstream_config(
    upstream: FakeUpstream, timeout: float = 10.0, **resilience: Any
) -> dict[str, Any]:
    return {
        "backends": {
            "remote": {
                "type": "http",
                "base_url": upstream.url,
                "timeout_seconds": timeout,
                "retry_backoff_seconds": 0.01,
                **resilience,
            }
        },
        "models": {"remote": "remote"},
    }


# -- processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, which it may flush, stop and start."""

    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test (apt-get install redis-server)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                self.process.poll()
                assert self.process.returncode is None, "redis-server exited"
                time.sleep(0.025)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with tempfile.TemporaryDirectory() as directory:
        server = PrivateRedis(free_port(), directory)
        server.start()
        yield server
        server.stop()


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "GATEWAY_CONFIG")
    }
    env.update(extra)
    return env
