"""The load benchmark still runs: ``python -m bench.run --smoke`` exits 0, per scenario.

A few seconds of every configuration (the upstream, the bare proxies, the gateway, with
its usage flush and held back):
each answers only 200s, the gateway makes 1.00 +/- 0.05 Redis round trips and ~0
Postgres queries per warm request, and Gn (the gateway with its usage flush held back)
really holds every count back. DATABASE_URL and REDIS_URL pass through.

The image workload's smoke run (small images, few clients, under a second per window)
checks that every configuration of both variants runs and reports with no error, not
its targets.
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
        [sys.executable, "-m", "bench.run", "--smoke", "--scenario", "tiny"],
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


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_image_smoke_run_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--scenario", "image"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert result.returncode == 0, (
        f"bench image smoke run exited {result.returncode}\n"
        f"--- stdout (tail)\n{result.stdout[-6000:]}\n--- stderr (tail)\n{result.stderr[-3000:]}"
    )
    assert "smoke: FAIL" not in result.stdout
    report = result.stdout.split("# Image workload")[1]
    # Both variants, both n, every configuration, each with its figures and no error.
    for variant in ("`b64_json`", "`url`"):
        section = report.split(f"## Images as {variant}")[1].split("## ")[0]
        for n in (1, 4):
            for label in ("B1 bare aiohttp proxy", "G gateway", "G gateway, server.workers: 2"):
                row = re.search(rf"^\| {n} \| {re.escape(label)} \|(.*)$", section, re.M)
                assert row is not None, f"{variant} n={n} {label} missing"
                assert "| 0 / 0 / 0 |" in row.group(0), row.group(0)
    # Links to stored images, in the file store and on the S3 server (moto).
    section = report.split("## Images as `b64_json`")[1].split("## ")[0]
    for n in (1, 4):
        for label in (
            "G gateway, response_format url (file store)",
            "G gateway, response_format url (S3 store: moto)",
        ):
            row = re.search(rf"^\| {n} \| {re.escape(label)} \|(.*)$", section, re.M)
            assert row is not None, f"b64 n={n} {label} missing"
            assert "| 0 / 0 / 0 |" in row.group(0), row.group(0)
    targets = report.split("## Image targets")[1]
    assert re.search(
        r"\| b64, n=4, G/B1: peak RSS <= 1\.25 x \| \d+\.\d\d \| (PASS|FAIL) \|", targets
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_jobs_smoke_run_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--scenario", "jobs"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, (
        f"bench jobs smoke run exited {result.returncode}\n"
        f"--- stdout (tail)\n{result.stdout[-6000:]}\n--- stderr (tail)\n{result.stderr[-3000:]}"
    )
    assert "smoke: PASS  jobs: every submit answered 202, every job succeeded" in result.stdout
    report = result.stdout.split("# Jobs: ")[1]
    for label in ("sync call: request to answer", "job: submit to its webhook received"):
        row = re.search(rf"^\| {re.escape(label)}[^|]* \| (\d+) \|", report, re.M)
        assert row is not None, label
        assert int(row.group(1)) > 0, label


def test_the_jobs_section_is_rewritten_alone() -> None:
    from bench import image_report, jobs_report

    old_jobs = f"{jobs_report.BEGIN}\n# Jobs: old\n{jobs_report.END}\n"
    existing = f"# tiny\nold tiny\n\n{old_jobs}\n{image_report.HEADING}\nold image\n"
    rest, found = jobs_report.split(existing)
    assert found == old_jobs
    assert "Jobs" not in rest
    # A run of the image scenario keeps the jobs section; a jobs run replaces it alone.
    kept = jobs_report.join(image_report.merge(rest, None, f"{image_report.HEADING}\nnew\n"), found)
    for part in ("old tiny", "\nnew\n", "# Jobs: old"):
        assert part in kept
    new = f"{jobs_report.BEGIN}\n# Jobs: new\n{jobs_report.END}\n"
    replaced = jobs_report.join(jobs_report.split(kept)[0], new)
    assert "# Jobs: old" not in replaced
    for part in ("old tiny", "\nnew\n", "# Jobs: new"):
        assert part in replaced
