"""``python -m bench.files`` still runs: one short round, every route answering 200s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_bench_files_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.files", "--duration", "1", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    for loop in ("uvloop", "asyncio"):
        for route in ("static", "files", "files-obstore"):
            assert f"| {loop} | {route} | " in result.stdout
