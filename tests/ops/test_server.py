"""The server as operators run it: real processes, SIGTERM, several workers, metrics."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.backends.base import BackendContext
from gateway.backends.local import LocalBackend
from gateway.backends.registry import default_registry
from gateway.config import Config
from tests.support.gateway import MakeKey
from tests.support.metrics import metric_total
from tests.support.processes import post, running_gateway
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.usage import today, usage_rows

pytestmark = pytest.mark.slow

GatewayProcess = Callable[..., Any]


async def test_sigterm_lets_in_flight_requests_finish_and_flushes(
    tmp_path: Path,
    raw_config: dict[str, Any],
    fake_upstream: FakeUpstream,
    make_key: MakeKey,
    db: Any,
):
    fake_upstream.mode = "hang"
    key = await make_key()
    async with (
        running_gateway(tmp_path, raw_config, upstream_config(fake_upstream)) as (
            url,
            process,
        ),
        aiohttp.ClientSession() as session,
    ):
        in_flight = asyncio.create_task(post(session, url, key.key, model="remote", n=2))
        while not fake_upstream.requests:
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        # The server stops taking new connections while the request is still running.
        for _ in range(200):
            try:
                async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/healthz"):
                    pass
            except aiohttp.ClientConnectionError:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("still accepting connections after SIGTERM")
        assert process.poll() is None  # draining, not dead
        fake_upstream.release.set()
        assert await in_flight == 200
        assert await asyncio.to_thread(process.wait, 20) == 0
    assert await usage_rows(db, key.key_id) == {today(): 2}  # the final flush


async def test_two_workers_share_the_port_and_the_metrics(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey, db: Any
):
    key = await make_key("pro")
    extra = {"server": {"workers": 2}, "usage": {"flush_interval_seconds": 0.2}}
    async with running_gateway(tmp_path, raw_config, extra) as (url, process):
        # Fresh connections, so the kernel spreads them over both workers.
        for _ in range(20):
            async with aiohttp.ClientSession() as session:
                assert await post(session, url, key.key) == 200
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as r:
            assert r.status == 200
            text = await r.text()
        assert (
            metric_total(
                text, "gateway_requests_total", route="/v1/images/generations", status="200"
            )
            == 20
        )
        assert metric_total(text, "gateway_admissions_total", outcome="admitted") == 20
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
    assert await usage_rows(db, key.key_id) == {today(): 20}


async def test_workers_stop_when_the_supervisor_is_killed(
    tmp_path: Path, raw_config: dict[str, Any]
):
    async with running_gateway(tmp_path, raw_config, {"server": {"workers": 2}}) as (
        url,
        process,
    ):
        process.send_signal(signal.SIGKILL)  # the supervisor only, not its workers
        await asyncio.to_thread(process.wait, 10)
        for _ in range(250):  # the orphaned workers stop serving on their own
            try:
                async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz"):
                    pass
            except aiohttp.ClientConnectionError:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("workers kept serving after their supervisor died")


async def test_sigterm_while_a_dead_worker_waits_to_restart_stops_everything(
    tmp_path: Path, raw_config: dict[str, Any]
):
    """A worker dies; SIGTERM comes during the pause before its restart: the supervisor
    starts nothing new, and it and the other worker exit."""
    async with running_gateway(tmp_path, raw_config, {"server": {"workers": 2}}) as (
        url,
        process,
    ):
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        workers = [int(pid) for pid in children.read_text().split()]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        [log_path] = tmp_path.glob(f"gateway-{url.rsplit(':', 1)[1]}.log")
        while "starting it again" not in log_path.read_text():  # the pause has begun
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert children.exists() is False or not children.read_text().split()
    assert not Path(f"/proc/{workers[1]}/stat").exists()


class _BrokenAtStart(LocalBackend):
    async def start(self, context: BackendContext) -> None:
        raise RuntimeError("the model server is not there")


async def test_a_start_up_that_fails_midway_closes_what_it_had_opened(
    config: Config, monkeypatch: pytest.MonkeyPatch
):
    """The HTTP clients, Redis and Postgres opened before a backend failed to start are
    closed: nothing is left for the garbage collector to warn about."""
    registry = default_registry()
    registry.register("broken", _BrokenAtStart)
    raw = msgspec.structs.replace(config.backends["local"], type="broken")
    broken = msgspec.structs.replace(config, backends={"local": raw})
    loop = asyncio.get_running_loop()
    warnings: list[str] = []
    monkeypatch.setattr(loop, "call_exception_handler", lambda c: warnings.append(c["message"]))
    runner = web.AppRunner(create_app(broken, registry=registry))
    with pytest.raises(RuntimeError, match="the model server is not there"):
        await runner.setup()
    await runner.cleanup()
    gc.collect()
    await asyncio.sleep(0)
    assert warnings == []
