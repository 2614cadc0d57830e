"""Faults with load running: Redis down (closed and open), Postgres down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway import migrate
from tests.conftest import (
    MakeGateway,
    MakeKey,
    PrivateRedis,
    free_port,
    today,
    usage_rows,
)

pytestmark = pytest.mark.slow


async def eventually(check: Any, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, "condition never became true"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_redis_restart_fails_closed_then_recovers_without_resetting_quotas(
    private_redis: PrivateRedis, make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway({"redis": {"url": private_redis.url}})
    key = await make_key("pro", images_per_day=10)
    for _ in range(3):
        assert (await gateway.generate(key.key)).status == 200
    await gateway.flush()

    private_redis.stop()
    for _ in range(5):  # load during the outage: every call refused, nothing free
        response = await gateway.generate(key.key)
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "service_unavailable"
    ready = await gateway.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["redis"].startswith("unreachable")

    private_redis.start()  # back, and empty

    async def serving() -> bool:
        return (await gateway.generate(key.key)).status == 200

    assert await eventually(serving) < 2.0
    response = await gateway.generate(key.key)
    assert response.status == 200
    assert response.headers["x-ratelimit-remaining-images"] == "5"  # 3 + 1 + 1 of 10
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 5}


async def test_redis_down_with_on_failure_open_counts_locally_and_reconciles(
    private_redis: PrivateRedis, make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway({"redis": {"url": private_redis.url, "on_failure": "open"}})
    key = await make_key("pro", requests_per_minute=6, images_per_day=100)
    assert (await gateway.generate(key.key, n=2)).status == 200
    await gateway.flush()

    private_redis.stop()
    statuses = [(await gateway.generate(key.key, n=3)).status for _ in range(7)]
    # The per-process window still holds the limit of 6 (it starts afresh locally).
    assert statuses == [200] * 6 + [429]

    private_redis.start()
    await eventually(lambda: _flushes(gateway))
    assert await usage_rows(db, key.key_id) == {today(): 2 + 6 * 3}
    response = await gateway.generate(key.key, n=1)
    assert response.status in (200, 429)  # the shared window now also holds the 6 + 1


async def _flushes(gateway: Any) -> bool:
    try:
        await gateway.flush()
    except Exception:
        return False
    return True


# -- Postgres down ---------------------------------------------------------------


class PrivatePostgres:
    """A throwaway Postgres cluster of the test's own, which it may stop and start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        bindir = _postgres_bindir()
        self.pg_ctl = str(bindir / "pg_ctl")
        self.initdb = str(bindir / "initdb")
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            pwd.getpwnam("postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(directory, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/gateway"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True)

    def init(self) -> None:
        self._run(
            self.initdb,
            "-D",
            str(self.directory / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run(
            self.pg_ctl,
            "-D",
            str(self.directory / "data"),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")


def _postgres_bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found and Path(found).resolve().parent.joinpath("initdb").exists():
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    assert candidates, "Postgres server binaries are needed (apt-get install postgresql)"
    return candidates[0]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's temp root: that is private to root, and initdb runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="gateway-test-pg-"))
    directory.chmod(0o755)
    server = PrivatePostgres(directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_postgres_down_warm_keys_keep_working_and_usage_catches_up(
    private_postgres: PrivatePostgres, make_gateway: MakeGateway
):
    from gateway.db.users import create_user
    from gateway.keys.issue import issue_key
    from tests.conftest import KEY_PREFIX

    await asyncio.to_thread(migrate.apply, private_postgres.url)
    conn = await asyncpg.connect(private_postgres.url)
    user = await create_user(conn, "pgdown@example.com", "pro")
    key, row = await issue_key(conn, user_id=user["id"], prefix=KEY_PREFIX, name="k")
    await conn.close()

    gateway = await make_gateway({"database": {"url": private_postgres.url}})
    assert (await gateway.generate(key, n=2)).status == 200  # warm: cached, counter seeded
    account = {"email": "someone@example.com", "password": "long enough"}
    assert (await gateway.client.post("/v1/auth/register", json=account)).status == 201
    login = await gateway.client.post("/v1/auth/login", json=account)
    token = (await login.json())["access_token"]

    private_postgres.stop()
    for _ in range(5):  # warm keys keep working with no errors
        assert (await gateway.generate(key)).status == 200
    me = await gateway.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status == 503  # account endpoints need the database: a clear 503
    assert (await me.json())["error"]["code"] == "service_unavailable"
    register = await gateway.client.post(
        "/v1/auth/register", json={"email": "new@example.com", "password": "long enough"}
    )
    assert register.status == 503
    assert (await register.json())["error"]["code"] == "service_unavailable"
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever asyncpg raises
        await gateway.flush()

    private_postgres.start()
    await eventually(lambda: _flushes(gateway))
    conn = await asyncpg.connect(private_postgres.url)
    try:
        assert await usage_rows(conn, row["id"]) == {today(): 7}
    finally:
        await conn.close()
