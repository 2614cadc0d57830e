"""Faults with load running: Redis down (closed and open), Postgres down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway import migrate
from gateway.keys.format import generate_key
from tests.support.config import KEY_PREFIX, merge
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.processes import free_port
from tests.support.redis import PrivateRedis
from tests.support.usage import today, usage_rows
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


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
    metrics = await (await gateway.client.get("/metrics")).text()
    assert 'gateway_dependency_errors_total{dependency="redis"} 5.0' in metrics
    assert 'gateway_admissions_total{outcome="error"} 5.0' in metrics
    assert 'code="service_unavailable",route="/v1/images/generations",status="503"} 5.0' in metrics

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
    # The quota seen from now on includes what was counted locally during the outage.
    # The rate window is not carried over: Redis came back empty, so it holds this call only.
    response = await gateway.generate(key.key, n=1)
    assert response.status == 200
    assert response.headers["x-ratelimit-remaining-images"] == str(100 - 2 - 6 * 3 - 1)
    assert response.headers["x-ratelimit-remaining-requests"] == str(6 - 1)


async def test_redis_down_a_key_not_yet_cached_is_read_from_postgres(
    private_redis: PrivateRedis, make_gateway: MakeGateway, make_key: MakeKey
):
    """With Redis unreachable, a key this process has never seen is looked up in Postgres
    (and, under ``on_failure: open``, served); a made-up key is still refused."""
    gateway = await make_gateway({"redis": {"url": private_redis.url, "on_failure": "open"}})
    warm = await make_key("pro")
    assert (await gateway.generate(warm.key)).status == 200  # Redis up, the app's connections open
    new = await make_key("pro")
    private_redis.stop()
    response = await gateway.generate(new.key)
    assert response.status == 200
    assert response.headers["x-ratelimit-remaining-images"] == "4999"
    refused = await gateway.generate(generate_key(KEY_PREFIX))
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "invalid_api_key"


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
    private_postgres: PrivatePostgres, make_app: MakeGateway
):
    from gateway.db.users import create_user
    from gateway.keys.issue import issue_key

    await asyncio.to_thread(migrate.apply, private_postgres.url)
    conn = await asyncpg.connect(private_postgres.url)
    user = await create_user(conn, "pgdown@example.com", "pro")
    key, row = await issue_key(conn, user_id=user["id"], prefix=KEY_PREFIX, name="k")
    await conn.close()

    gateway = await make_app({"database": {"url": private_postgres.url}})
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


# -- processes killed or stopped under load ------------------------------------------


async def _post_outcome(
    session: Any, url: str, key: str, n: int, model: str | None = None
) -> tuple[str, int]:
    """("ok", images) for a 200, ("refused", 0) for another status, ("cut", n) if the
    connection died before an answer (the request may or may not have been admitted)."""
    import aiohttp

    body: dict[str, Any] = {"prompt": "p", "size": "256x256", "n": n}
    if model is not None:
        body["model"] = model
    try:
        async with session.post(
            f"{url}/v1/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            data = await response.json()
            if response.status == 200:
                return "ok", len(data["data"])
            return "refused", 0
    except (TimeoutError, aiohttp.ClientError):
        return "cut", n


async def test_sigkill_with_requests_in_flight_charges_exactly_the_delivered_images(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    make_gateway: MakeGateway,
    db: Any,
    fake_upstream: Any,
):
    import signal

    import aiohttp

    from tests.support.processes import running_gateway
    from tests.support.upstreams import upstream_config

    fake_upstream.mode = "hang"
    key = await make_key("pro", requests_per_minute=100_000, images_per_day=1_000_000)
    extra = upstream_config(fake_upstream, max_concurrency=0)
    async with (
        running_gateway(tmp_path, raw_config, extra) as (url, process),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session,
    ):
        done = await asyncio.gather(*(_post_outcome(session, url, key.key, 2) for _ in range(60)))
        assert done == [("ok", 2)] * 60
        # Admitted, charged, and held by the upstream when the process dies.
        held = [
            asyncio.create_task(_post_outcome(session, url, key.key, 3, model="remote"))
            for _ in range(40)
        ]
        while len(fake_upstream.requests) < 40:
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert await asyncio.gather(*held) == [("cut", 3)] * 40
    survivor = await make_gateway()
    await survivor.flush()  # settles the dead process's journal, then writes the counts
    assert await usage_rows(db, key.key_id) == {today(): 120}
    # ...and the quota agrees: the next request is counted from 120.
    response = await survivor.generate(key.key)
    assert response.status == 200
    assert response.headers["x-ratelimit-remaining-images"] == str(1_000_000 - 121)


def _listening_sockets(port: int) -> int:
    """TCP sockets listening on ``port`` (on any address)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie awaiting its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_killed_worker_s_requests_in_flight_are_given_back_by_the_others(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey, db: Any, fake_upstream: Any
):
    import signal

    import aiohttp

    from tests.support.processes import running_gateway
    from tests.support.upstreams import upstream_config

    fake_upstream.mode = "hang"
    key = await make_key("pro", requests_per_minute=100_000, images_per_day=1_000_000)
    extra = merge(upstream_config(fake_upstream, max_concurrency=0), {"server": {"workers": 2}})
    async with (
        running_gateway(tmp_path, raw_config, extra) as (url, supervisor),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session,
    ):
        port = int(url.rsplit(":", 1)[1])
        while _listening_sockets(port) < 2:  # both workers have bound the port
            await asyncio.sleep(0.01)
        workers = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text()
        victim = int(workers.split()[0])
        # Forty connections, spread over both workers by the kernel, all held upstream.
        load = [
            asyncio.create_task(_post_outcome(session, url, key.key, 2, model="remote"))
            for _ in range(40)
        ]
        while len(fake_upstream.requests) < 40:
            await asyncio.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        while _alive(victim):
            await asyncio.sleep(0.01)
        fake_upstream.release.set()  # the other worker's requests complete
        outcomes = await asyncio.gather(*load)
        delivered = sum(images for kind, images in outcomes if kind == "ok")
        assert set(outcomes) == {("ok", 2), ("cut", 2)}  # both workers had some
        supervisor.send_signal(signal.SIGTERM)  # final flushes: a worker settles the journal
        assert await asyncio.to_thread(supervisor.wait, 30) == 0
    assert await usage_rows(db, key.key_id) == {today(): delivered}


async def test_sigkill_at_any_moment_under_load_charges_the_delivered_images(
    tmp_path: Path,
    raw_config: dict[str, Any],
    make_key: MakeKey,
    make_gateway: MakeGateway,
    db: Any,
):
    import signal

    import aiohttp

    from tests.support.processes import running_gateway

    key = await make_key("pro", requests_per_minute=100_000, images_per_day=1_000_000)
    async with (
        running_gateway(tmp_path, raw_config) as (url, process),
        aiohttp.ClientSession() as session,
    ):
        load = [asyncio.create_task(_post_outcome(session, url, key.key, 2)) for _ in range(400)]
        while sum(task.done() for task in load) < 50:  # kill in the middle of the load
            await asyncio.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        outcomes = await asyncio.gather(*load)
    delivered = sum(images for kind, images in outcomes if kind == "ok")
    assert delivered >= 100
    survivor = await make_gateway()
    await survivor.flush()
    charged = (await usage_rows(db, key.key_id)).get(today(), 0)
    # Every delivered image is charged, and the cut requests are given back, except at
    # most the one whose response was being handed to the kernel at the instant of the
    # kill (its reservation is settled just before its bytes are written).
    assert delivered <= charged <= delivered + 2


async def test_sigterm_under_load_cuts_no_request_and_flushes_exactly(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey, db: Any, fake_upstream: Any
):
    import signal

    import aiohttp

    from tests.support.processes import running_gateway
    from tests.support.upstreams import upstream_config

    fake_upstream.mode = "hang"
    key = await make_key("pro", requests_per_minute=100_000, images_per_day=1_000_000)
    extra = upstream_config(fake_upstream, max_concurrency=0)
    async with running_gateway(tmp_path, raw_config, extra) as (url, process):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
            load = [asyncio.create_task(_post_model(session, url, key.key)) for _ in range(40)]
            while len(fake_upstream.requests) < 40:  # all forty are in flight upstream
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0)  # let the signal land before the upstream answers
            fake_upstream.release.set()
            statuses = await asyncio.gather(*load)
        assert statuses == [200] * 40
        assert await asyncio.to_thread(process.wait, 30) == 0
    assert await usage_rows(db, key.key_id) == {today(): 40}


async def _post_model(session: Any, url: str, key: str) -> int:
    async with session.post(
        f"{url}/v1/images/generations",
        json={"prompt": "p", "size": "256x256", "model": "remote"},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        await response.read()
        return int(response.status)
