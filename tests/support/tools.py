"""Command-line tools some tests run (promtool, kubectl), installed when missing."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.paths import ROOT

__all__ = ["tool"]


def tool(name: str) -> str:
    """The path of ``name``; installed first (Debian's package, as ``scripts/services.sh``
    installs Postgres and Redis) when missing. Skips the test, saying why, if it cannot be.
    """
    found = shutil.which(name)
    if found:
        return found
    result = subprocess.run(
        [str(ROOT / "scripts" / "services.sh"), "tool", name],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    path = result.stdout.strip()
    if result.returncode != 0 or not path:
        reason = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        pytest.skip(f"{name} is not installed and could not be installed: {reason}")
    return path
