"""Live config reload: SIGHUP (to the supervisor, passed on to every worker) or
``gateway reload`` re-reads config.yaml, checks it as start-up does, applies its live
part without dropping a request, names what waits for a restart, and refuses a broken
file keeping the config in effect."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.config import ADMIN_TOKEN, merge, write_config
from tests.support.gateway import MakeKey
from tests.support.processes import clean_env, gateway_command, running_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RELOADED = "config reloaded from"
REFUSED = "config reload refused"


def config_path(tmp_path: Path, url: str) -> Path:
    return tmp_path / f"config-{url.rsplit(':', 1)[1]}.yaml"


def log_path(tmp_path: Path, url: str) -> Path:
    return tmp_path / f"gateway-{url.rsplit(':', 1)[1]}.log"


async def logged(path: Path, text: str, times: int = 1) -> None:
    """Until the log holds ``text`` ``times`` times."""
    while path.read_text(errors="replace").count(text) < times:
        await asyncio.sleep(0.02)


async def generate(url: str, key: str, **body: Any) -> int:
    """One generation on a connection of its own (the kernel picks the worker)."""
    body.setdefault("prompt", "p")
    body.setdefault("size", "256x256")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.post(
            f"{url}/v1/images/generations", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        await response.read()
        return response.status


async def admin_config(url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/admin/config", headers=ADMIN) as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()


@contextlib.asynccontextmanager
async def load(url: str, key: str) -> AsyncIterator[list[int]]:
    """Generations one after another, each on a new connection, until the block ends;
    their statuses (an exception, a dropped request, fails the test)."""
    statuses: list[int] = []
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            statuses.append(await generate(url, key))

    tasks = [asyncio.create_task(run()) for _ in range(4)]
    try:
        yield statuses
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@pytest.mark.slow
async def test_a_plan_limit_lowered_under_load_takes_effect_on_every_worker(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey
):
    roomy = {"requests_per_minute": 100000, "images_per_day": 100000, "max_images_per_request": 4}
    raw = merge(raw_config, {"server": {"workers": 2}, "plans": {"free": roomy}})
    key = await make_key("free")
    async with running_gateway(tmp_path, raw) as (url, process):
        before = await admin_config(url)
        async with load(url, key.key) as statuses:
            while len(statuses) < 20:
                await asyncio.sleep(0.01)
            lowered = merge(raw, {"plans": {"free": {"requests_per_minute": 1}}})
            lowered["server"]["port"] = int(url.rsplit(":", 1)[1])
            write_config(config_path(tmp_path, url), lowered)
            process.send_signal(signal.SIGHUP)  # the supervisor: it tells both workers
            await logged(log_path(tmp_path, url), RELOADED, times=2)
            served = len(statuses)
            while len(statuses) < served + 20:
                await asyncio.sleep(0.01)
        assert set(statuses) <= {200, 429}  # nothing dropped, nothing failed
        assert statuses[:20] == [200] * 20
        assert statuses[-8:] == [429] * 8  # every worker applies the new limit
        # Each on a new connection, so over both workers: all refused.
        assert [await generate(url, key.key) for _ in range(10)] == [429] * 10

        after = await admin_config(url)
        assert after["config"]["plans"]["free"]["requests_per_minute"] == 1
        assert after["hash"] != before["hash"]
        text = await metrics(url)
        assert f'gateway_config_info{{hash="{after["hash"][:16]}"}} 1.0' in text
        assert 'gateway_config_reloads_total{outcome="applied"} 2.0' in text


async def test_a_broken_file_changes_nothing_and_a_good_one_applies_what_it_can(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey
):
    key = await make_key("free")
    async with running_gateway(tmp_path, raw_config) as (url, process):
        path, log = config_path(tmp_path, url), log_path(tmp_path, url)
        good = path.read_text()
        before = await admin_config(url)
        assert before["config"]["auth"]["jwt_secrets"] == ["********"]
        assert before["config"]["admin"]["token"] == "********"
        assert re.fullmatch(r"[0-9a-f]{64}", before["hash"])

        # A file start-up would refuse: refused, the error logged, nothing changed.
        path.write_text(good.replace("requests_per_minute: 10", "requests_per_minute: lots"))
        process.send_signal(signal.SIGHUP)
        await logged(log, REFUSED)
        assert "plans.free.requests_per_minute: must be a whole number" in log.read_text()
        assert await admin_config(url) == before
        assert await generate(url, key.key) == 200
        assert 'gateway_config_reloads_total{outcome="refused"} 1.0' in await metrics(url)

        # `gateway reload` checks it first, and sends nothing.
        environ = clean_env()
        refused = subprocess.run(
            gateway_command("reload", "--config", str(path)),
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 2
        assert refused.stderr.startswith("config error: plans.free.requests_per_minute")
        assert log.read_text().count(REFUSED) == 1

        # A good file: a new model and backend, a plan changed, the admin token rotated;
        # a port and a body limit changed too, which wait for a restart.
        raw = merge(
            raw_config,
            {
                "server": {"port": 1, "max_body_bytes": 1234},
                "plans": {"free": {"max_images_per_request": 1}},
                "backends": {"second": {"type": "local"}},
                "models": {"second": "second"},
                "admin": {"token": "a-new-admin-token-0123456789"},
            },
        )
        write_config(path, raw)
        reloaded = subprocess.run(
            gateway_command("reload", "--config", str(path), "--port", url.rsplit(":", 1)[1]),
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert reloaded.returncode == 0, reloaded.stderr
        assert (
            reloaded.stdout
            == f"config ok; gateway {process.pid} reloads it (its log says what changed)\n"
        )
        await logged(log, RELOADED)
        text = log.read_text()
        assert (
            "config reload: server.port, server.max_body_bytes cannot change while the gateway "
            "runs; the running values stay until a restart"
        ) in text
        assert await generate(url, key.key, model="second") == 200
        assert await generate(url, key.key, n=2) == 400  # the plan's new most per request
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/admin/config", headers=ADMIN) as old_token:
                assert old_token.status == 401
            rotated = {"Authorization": "Bearer a-new-admin-token-0123456789"}
            async with session.get(f"{url}/admin/config", headers=rotated) as response:
                after = await response.json()
        assert after["hash"] != before["hash"]
        assert after["config"]["server"]["max_body_bytes"] == 65536  # kept
        assert after["config"]["backends"]["second"]["type"] == "local"
