"""Real gateway processes for tests: start one on a free port, wait until it is ready."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.accounts import RELAXED
from tests.support.config import merge, write_config

__all__ = [
    "HEADER_READ_TIMEOUT",
    "IDLE_CONNECTIONS",
    "MAX_BODY",
    "Served",
    "clean_env",
    "free_port",
    "gateway_command",
    "post",
    "raise_open_file_limit",
    "running_gateway",
    "served_gateway",
    "wait_until_ready",
]

#: The served gateway accepts bodies up to this size (big enough for 100,000 '[').
MAX_BODY = 256 * 1024
#: The served gateway's server.header_read_timeout_seconds.
HEADER_READ_TIMEOUT = 4.0
#: Connections the idle-connection test holds open: the open-file limit must allow them.
IDLE_CONNECTIONS = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    tmp_path: Path,
    raw_config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    *,
    command: str = "serve",
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``gateway <command>`` (``serve``, or ``worker``) on a free port, once ready."""
    port = free_port()
    config = merge(merge(raw_config, extra or {}), {"server": {"port": port}})
    path = write_config(tmp_path / f"config-{port}.yaml", config)
    log_path = tmp_path / f"gateway-{port}.log"
    with log_path.open("wb") as log_file:  # a file, never a pipe: a full pipe blocks the server
        process = subprocess.Popen(
            gateway_command(command, "--config", str(path), "--host", "127.0.0.1"),
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


@dataclass
class Served:
    """A ``gateway serve`` process and the file its log goes to."""

    url: str
    port: int
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if soft == resource.RLIM_INFINITY else soft


@asynccontextmanager
async def served_gateway(
    directory: Path, raw_config: dict[str, Any], redis_prefix: str
) -> AsyncIterator[Served]:
    """A gateway process for raw-socket tests: logs at DEBUG, bodies up to ``MAX_BODY``,
    request heads within ``HEADER_READ_TIMEOUT``, per-IP account budgets out of the way,
    and a Redis namespace of its own inside the run's (127.0.0.1's budgets are its own)."""
    # Before the process starts, so that it inherits the limit (the idle-connection test).
    raise_open_file_limit(2 * IDLE_CONNECTIONS + 1024)
    extra = merge(
        RELAXED,
        {
            "server": {
                "max_body_bytes": MAX_BODY,
                "header_read_timeout_seconds": HEADER_READ_TIMEOUT,
            },
            "logging": {"level": "DEBUG"},
            "redis": {"key_prefix": f"{redis_prefix}{uuid.uuid4().hex[:10]}:"},
        },
    )
    async with running_gateway(directory, raw_config, extra) as (url, _process):
        port = int(url.rsplit(":", 1)[1])
        yield Served(url, port, directory / f"gateway-{port}.log")
