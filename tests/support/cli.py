"""The ``gateway`` command run for real, as a subprocess with a clean environment."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import clean_env, gateway_command

__all__ = ["CliResult", "run_cli"]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, cwd: Path, stdin: str | None = None, **env: str) -> CliResult:
    """Run ``python -m gateway ARGS`` in ``cwd`` with a clean environment plus ``env``
    (``stdin``: what the command reads on its standard input)."""
    environ = clean_env(**env)
    environ.pop("GATEWAY_MIGRATIONS", None)
    if "GATEWAY_JWT_SECRET" not in env:
        environ.pop("GATEWAY_JWT_SECRET", None)
    process = await asyncio.create_subprocess_exec(
        *gateway_command(*args),
        cwd=cwd,
        env=environ,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    data = stdin.encode() if stdin is not None else None
    stdout, stderr = await asyncio.wait_for(process.communicate(data), timeout=60)
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())
