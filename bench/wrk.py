"""wrk: finding (or installing) it, its Lua script, and reading its output.

Every configuration gets the same request from the same script: ``POST`` of
``{"prompt": "bench", "size": "256x256"}`` with ``Authorization: Bearer <key>``, the
key taken in turn from a file of keys (each thread starting at its own offset), so
with 10,000 keys every key is used equally. The baselines ignore the header; the
gateway needs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LUA_SCRIPT", "LoadResult", "ensure_wrk", "parse_wrk_output", "wrk_version"]

LUA_SCRIPT = r"""
-- Written by bench/wrk.py. args: the keys file (one API key a line).
local body = '{"prompt": "bench", "size": "256x256"}'
local requests_by_key = {}
local n = 0
local i = 0
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  for line in io.lines(path) do
    if #line > 0 then
      n = n + 1
      requests_by_key[n] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. line,
      }, body)
    end
  end
  if n == 0 then error("no keys in " .. path) end
  i = (thread_index * 7919) % n
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return requests_by_key[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class LoadResult:
    """One timed run of one configuration."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    duration_s: float
    #: Responses that were not 2xx/3xx (wrk) or not 200 (the Python generator).
    bad_status: int = 0
    socket_errors: int = 0
    tool: str = "wrk"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.bad_status == 0 and self.socket_errors == 0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk_output(name: str, text: str) -> LoadResult:
    """Requests/sec and the 50 % / 99 % lines of ``--latency``, plus our ``done()`` line."""
    rps_match = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    done = re.search(r"^BENCH_RESULT (\{.*\})$", text, re.M)
    if rps_match is None or p50 is None or p99 is None or done is None:
        raise RuntimeError(f"could not read wrk's output:\n{text}")
    extra = json.loads(done.group(1))
    socket_errors = sum(
        extra[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return LoadResult(
        name=name,
        rps=float(rps_match.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(extra["requests"]),
        duration_s=extra["duration_us"] / 1e6,
        bad_status=int(extra["status_errors"]),
        socket_errors=int(socket_errors),
        tool="wrk",
        extra=extra,
    )


def wrk_version(binary: str) -> str:
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def ensure_wrk(*, install: bool = True) -> tuple[str | None, str]:
    """wrk's path (installing Debian's ``wrk`` when root), or None and how to get it."""
    found = shutil.which("wrk")
    if found:
        return found, ""
    hint = "wrk is not installed: run `apt-get install -y wrk` (as root), then run again"
    if not install:
        return None, hint
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, hint
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("==> installing wrk with apt-get", flush=True)
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
    if subprocess.run(command, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(command, env=env, check=False)
    found = shutil.which("wrk")
    return (found, "") if found else (None, hint + " (apt-get install failed)")


def write_lua(directory: Path) -> Path:
    path = directory / "bench.lua"
    path.write_text(LUA_SCRIPT)
    return path
