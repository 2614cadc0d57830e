"""Real gateway processes for tests: start one on a free port, wait until it is ready."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import clean_env, free_port, gateway_command, merge, write_config

__all__ = ["post", "running_gateway", "wait_until_ready"]


async def wait_until_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            assert process.poll() is None, "the gateway process exited"
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not become ready")


@asynccontextmanager
async def running_gateway(
    tmp_path: Path, raw_config: dict[str, Any], extra: dict[str, Any] | None = None
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    config = merge(merge(raw_config, extra or {}), {"server": {"port": port}})
    path = write_config(tmp_path / f"config-{port}.yaml", config)
    log_path = tmp_path / f"gateway-{port}.log"
    with log_path.open("wb") as log_file:  # a file, never a pipe: a full pipe blocks the server
        process = subprocess.Popen(
            gateway_command("serve", "--config", str(path), "--host", "127.0.0.1"),
            env=clean_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers and all are killed
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_ready(url, process)
        # Every worker serves once the gateway says it listens (one may answer before).
        while b"gateway listening on" not in log_path.read_bytes():
            assert process.poll() is None, "the gateway process exited"
            await asyncio.sleep(0.05)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):  # the whole group: workers too
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


async def post(session: aiohttp.ClientSession, url: str, key: str, **body: Any) -> int:
    body.setdefault("prompt", "p")
    body.setdefault("size", "256x256")
    async with session.post(
        f"{url}/v1/images/generations", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        await response.read()
        return response.status
