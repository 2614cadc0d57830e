"""The load benchmark still runs: ``python -m bench.run --smoke`` exits 0.

A few seconds of every configuration (the upstream, the bare proxies, the gateway, with
its usage flush and held back):
each answers only 200s, the gateway makes 1.00 +/- 0.05 Redis round trips and ~0
Postgres queries per warm request, and Gn (the gateway with its usage flush held back)
really holds every count back. DATABASE_URL and REDIS_URL pass through.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.paths import ROOT


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_bench_smoke_run_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert result.returncode == 0, (
        f"bench smoke run exited {result.returncode}\n"
        f"--- stdout (tail)\n{result.stdout[-6000:]}\n--- stderr (tail)\n{result.stderr[-3000:]}"
    )
    assert "smoke: FAIL" not in result.stdout
    # Every fixed-rate configuration made it into the report, the diagnostic Gn included.
    fixed = result.stdout.split("## Fixed rate")[1].split("## Redis")[0]
    for label in ("B1 bare aiohttp proxy", "B1r bare aiohttp proxy", "G gateway", "Gn gateway"):
        assert f"| {label}" in fixed
    # How busy each process is at that rate, and the floor the Redis round trip sets.
    assert re.search(r"one process is busy, of one core: B1 \d+%, B1r \d+%, G \d+%", fixed)
    targets = result.stdout.split("## Targets")[1]
    assert re.search(r"the one Redis round trip alone \(B1r\): [+-]\d+\.\d\d ms", targets)
