"""The benchmark's results: medians, targets, the table, and ``BENCHMARKS.md``."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.counters import PostgresUsage, RedisUsage
from bench.wrk import LoadResult

__all__ = ["Outcome", "Target", "machine_info", "render", "targets"]

LABELS = {
    "B0": "B0 upstream, direct",
    "B1": "B1 bare aiohttp proxy",
    "B1h": "B1h bare proxy, gateway's upstream client",
    "B1r": "B1r bare aiohttp proxy + 1 Redis round trip",
    "G": "G gateway",
    "Gl": "Gl gateway, access log on",
    "Gn": "Gn gateway, usage flush held back (diagnostic)",
    "Gcr": "Gcr gateway, charging credits",
    "B1x2": "B1 bare proxy, 2 processes",
    "Gx2": "G gateway, server.workers: 2",
}

#: The configurations run in closed loop (wrk), in the order they are interleaved.
CLOSED_LOOP = ["B0", "B1", "B1h", "B1r", "G", "Gl", "Gcr"]
#: The configurations run at the fixed rate. Gn is G with its usage flush held back:
#: not a target, it says how much of G's latency is the write-behind to Postgres.
FIXED_RATE = ["B1", "B1r", "G", "Gn"]


@dataclass
class Target:
    name: str
    value: str
    passed: bool


@dataclass
class Outcome:
    """Everything one benchmark run found."""

    settings: dict[str, Any]
    runs: dict[str, list[LoadResult]] = field(default_factory=dict)
    fixed: dict[str, list[LoadResult]] = field(default_factory=dict)
    fixed_rate: float = 0.0
    #: When G cannot carry ``fixed_rate``: the same at half of G's own throughput.
    fixed_low: dict[str, list[LoadResult]] = field(default_factory=dict)
    fixed_low_rate: float = 0.0
    redis: RedisUsage | None = None
    postgres: PostgresUsage | None = None
    rss_before: int = 0
    rss_after: int = 0
    keys: int = 0
    workers_note: str = ""
    workers_redis: RedisUsage | None = None
    workers_postgres: PostgresUsage | None = None
    profile: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def median(self, name: str, attr: str, fixed: bool | str = False) -> float:
        results = self.source(fixed).get(name, [])
        values = [getattr(r, attr) for r in results]
        return statistics.median(values) if values else float("nan")

    def source(self, fixed: bool | str) -> dict[str, list[LoadResult]]:
        if fixed == "low":
            return self.fixed_low
        return self.fixed if fixed else self.runs

    def ratio(self, top: str, bottom: str) -> float:
        below = self.median(bottom, "rps")
        return self.median(top, "rps") / below if below else float("nan")

    @property
    def rss_per_key(self) -> float:
        return (self.rss_after - self.rss_before) / self.keys if self.keys else float("nan")


def machine_info() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "ram": ram,
        "kernel": platform.release(),
        "load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def targets(outcome: Outcome) -> list[Target]:
    found = []
    ratio = outcome.ratio("G", "B1")
    found.append(Target("G/B1 throughput >= 0.80", f"{ratio:.2f}", ratio >= 0.80))
    if outcome.fixed:
        g99 = outcome.median("G", "p99_ms", fixed=True)
        b99 = outcome.median("B1", "p99_ms", fixed=True)
        measured = f"G {g99:.2f} ms vs B1 {b99:.2f} ms ({g99 - b99:+.2f} ms)"
        if outcome.fixed.get("B1r"):
            floor = outcome.median("B1r", "p99_ms", fixed=True) - b99
            measured += f"; the one Redis round trip alone (B1r): {floor:+.2f} ms"
        found.append(Target("fixed-rate p99: G <= B1 + 1 ms", measured, g99 <= b99 + 1.0))
    if outcome.redis is not None:
        rt = outcome.redis.round_trips_per_request
        found.append(
            Target(
                "Redis round trips per request 1.00 +/- 0.05 (request path)",
                f"{rt:.3f} ({outcome.redis.per_request(outcome.redis.evalsha):.3f} with the "
                "flusher's)",
                abs(rt - 1) <= 0.05,
            )
        )
    if outcome.postgres is not None:
        pg = outcome.postgres.per_request
        found.append(
            Target(
                "Postgres queries per request 0 (flushes amortised)",
                f"{pg:.4f}",
                outcome.postgres.beyond_flusher == 0,
            )
        )
    if outcome.runs.get("Gcr"):
        ratio = outcome.ratio("Gcr", "G")
        found.append(Target("Gcr/G throughput >= 0.98 (credits)", f"{ratio:.3f}", ratio >= 0.98))
    if outcome.keys >= 1000:
        per_key = outcome.rss_per_key
        found.append(Target("RSS per cached key <= 500 bytes", f"{per_key:.0f} B", per_key <= 500))
    return found


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _load_table(outcome: Outcome, names: list[str], fixed: bool | str = False) -> list[str]:
    lines = [
        "| configuration | RPS (median) | p50 ms | p99 ms | RPS of each run "
        "| non-200 / socket errors |",
        "|---|---:|---:|---:|---|---|",
    ]
    source = outcome.source(fixed)
    for name in names:
        results = source.get(name, [])
        if not results:
            continue
        each = ", ".join(f"{r.rps:.0f}" for r in results)
        errors = f"{sum(r.bad_status for r in results)} / {sum(r.socket_errors for r in results)}"
        lines.append(
            f"| {LABELS[name]} | {outcome.median(name, 'rps', fixed):.0f} | "
            f"{_ms(outcome.median(name, 'p50_ms', fixed))} | "
            f"{_ms(outcome.median(name, 'p99_ms', fixed))} | {each} | {errors} |"
        )
    return lines


_KNOWN = {
    "script|exists": "redis-py asks whether a pipeline's scripts are loaded before running "
    "it: the usage flusher's two pipelines per flush, not the request path",
}


_ROLES = ("proxy or gateway", "upstream", "redis", "postgres")


def _cpu_table(outcome: Outcome, names: list[str], fixed: bool | str = False) -> list[str]:
    lines = [
        "| configuration | proxy or gateway | upstream | redis | postgres | all |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    source = outcome.source(fixed)
    for name in names:
        results = source.get(name, [])
        if not any("cpu_us_per_request" in r.extra for r in results):
            continue
        cells = []
        for role in (*_ROLES, None):
            value = _cpu_median(results, role)
            cells.append(f"{value:.0f}" if value is not None else "-")
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def _cpu_median(results: list[LoadResult], role: str | None) -> float | None:
    """The median over ``results`` of ``role``'s CPU µs per request (``None``: all roles'
    together); ``None`` when no run measured it."""
    values = [
        (sum(cpu.values()) if role is None else cpu.get(role))
        for cpu in (r.extra.get("cpu_us_per_request") for r in results)
        if cpu is not None
    ]
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _busy_share(outcome: Outcome, names: list[str], rate: float) -> list[str]:
    """How busy each proxy or gateway process is at the fixed rate (its CPU per request
    times the rate): queueing, and so the tail, grows steeply as that nears one core."""
    shares = []
    for name in names:
        cpu = _cpu_median(outcome.fixed.get(name, []), "proxy or gateway")
        if cpu is not None:
            shares.append(f"{name} {cpu * rate / 1e4:.0f}%")
    if not shares:
        return []
    return [
        "",
        "At this rate the proxy's or gateway's one process is busy, of one core: "
        + ", ".join(shares)
        + ". The tail grows steeply as that nears 100%, and the other core is shared by "
        "the upstream, Redis, Postgres and the load generator.",
    ]


def _keep_up(outcome: Outcome, fixed: bool | str, rate: float) -> list[str]:
    lines = []
    for name in _present(outcome, FIXED_RATE, fixed):
        achieved = outcome.median(name, "rps", fixed=fixed)
        if achieved < 0.95 * rate:
            lines += [
                "",
                f"{LABELS[name]} could not keep up with {rate:.0f} requests/s (it completed "
                f"{achieved:.0f}/s): its latency there is mostly time spent queued.",
            ]
    return lines


def _redis_lines(usage: RedisUsage) -> list[str]:
    per = usage.per_request
    internal = ", ".join(
        f"{k.upper()} {v / usage.requests:.2f}"
        for k, v in sorted(usage.delta.items(), key=lambda kv: -kv[1])
        if k not in ("evalsha", "eval")
    )
    other = ", ".join(
        f"{name.upper()} {calls}" + (f" ({_KNOWN[name]})" if name in _KNOWN else "")
        for name, calls in usage.other_top_level.items()
    )
    return [
        f"- requests measured: {usage.requests} (admitted by the gateway: wrk's count plus "
        f"those in flight when it stopped); EVALSHA calls: {usage.evalsha}",
        f"- all-in EVALSHA / requests: {per(usage.evalsha):.3f}",
        f"- **request-path round trips per request (all but the flusher's per-interval "
        f"scripts): {usage.round_trips_per_request:.3f}**",
        f"  - admissions (`admit.lua`, = ZCARD): {per(usage.admissions):.3f}",
        f"  - key-cache lookups (`lookup.lua`: refreshes of keys past their local TTL): "
        f"{per(usage.lookups):.3f}",
        f"  - usage flusher (`collect.lua` = SCARD, `ack.lua` = DEL): {per(usage.flusher):.3f}",
        f"  - releases (`release.lua`, = DECRBY): {per(usage.releases):.3f}",
        f"- commands run inside scripts, per request (not round trips): "
        f"{usage.script_internal / usage.requests:.2f} in all — {internal or 'none'}",
        f"- other top-level commands (ones no script runs): {other or 'none'}",
    ]


def _postgres_lines(usage: PostgresUsage, method_note: str) -> list[str]:
    what = "transactions" if usage.method == "xact_commit" else "statements"
    return [
        f"- method: {usage.method}" + (f" ({method_note})" if method_note else ""),
        f"- {what} in the bench database during the measured windows: {usage.observed} "
        f"over {usage.window_s:.1f} s ({usage.raw_per_request:.4f} per request before "
        f"subtracting the flusher)",
        f"- the usage flusher may account for {usage.allowance} (at most one batch per "
        f"flush interval per process: {usage.details.get('flush_batches_allowed', '?')} batches; "
        f"{usage.details.get('flushers', '?')} processes flush this database: G's and Gl's, "
        "which share its Redis data too, or the two workers)",
        f"- **beyond the flusher: {usage.beyond_flusher} -> {usage.per_request:.4f} "
        f"queries per request**",
    ]


def render(outcome: Outcome) -> str:
    s = outcome.settings
    lines = [
        "# Benchmark: gateway vs. bare proxy vs. upstream",
        "",
        f"Date: {s['date']}  ",
        f"Command: `{s['command']}`  ",
        f"Load generator: {s['load_tool']}  ",
        f"Per configuration: {s['runs']} run(s) of {s['duration']} s, {s['connections']} "
        f"connections, interleaved (B0, B1, B1h, B1r, G, Gl, B0, ...); medians shown.  ",
        f"Gateway backend: `type: {s['backend']}` pointed at the fake upstream; "
        f"{s['keys']} API keys, each requested once more before every measured G run"
        + (
            f", then {s['prime_s']} s of the same load, unmeasured (one key-cache TTL: the "
            "run sees the steady state)"
            if s.get("prime_s")
            else ""
        )
        + f"; Redis: {s['redis']}. G runs with `logging.access_log: false` (B1 writes no "
        "access log either; usage flushing and metrics stay on); Gl is the same gateway "
        "with its access log on.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in outcome.machine.items()]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in outcome.versions.items()]
    lines += ["", "## Throughput and latency (closed loop, wrk `--latency`)", ""]
    lines += _load_table(outcome, _present(outcome, CLOSED_LOOP))
    lines += [
        "",
        f"G/B1 throughput: **{outcome.ratio('G', 'B1'):.2f}**; "
        f"G/B0: **{outcome.ratio('G', 'B0'):.2f}**; B1/B0: {outcome.ratio('B1', 'B0'):.2f}",
    ]
    if outcome.runs.get("Gl"):
        lines += [
            "",
            f"With its access log on (Gl: `logging.access_log: true`, the default; G and B1 "
            f"run without one), G/B1 is {outcome.ratio('Gl', 'B1'):.2f}: one JSON line per "
            "request costs that much.",
        ]
    if outcome.runs.get("Gcr"):
        lines += [
            "",
            f"Charging credits (Gcr: the keys' plan has `monthly_credits`, so each admission "
            f"also checks and takes the user's balance and appends a ledger entry, in the "
            f"same script; the flusher writes the entries to Postgres), Gcr/G is "
            f"{outcome.ratio('Gcr', 'G'):.3f}.",
        ]
    if outcome.runs.get("B1h"):
        lines += [
            "",
            f"G/B1h throughput: {outcome.ratio('G', 'B1h'):.2f}. B1h is B1 forwarding with "
            "the gateway's own upstream client (`gateway/backends/h1.py`) instead of "
            "`aiohttp.ClientSession`: part of G/B1 is that client being lighter than "
            "aiohttp's, and G/B1h is what the gateway's own work costs on top of it.",
        ]
    if outcome.runs.get("B1r"):
        lines += [
            "",
            f"B1r/B1 throughput: {outcome.ratio('B1r', 'B1'):.2f}. B1r is B1 making, before "
            "it forwards, the one Redis round trip every gateway request makes (an "
            "`EVALSHA` of a script that does nothing, through the gateway's own Redis "
            "client, to the same Redis): the least that the one-round-trip target costs.",
        ]
    lines += [
        "",
        "CPU time per request, µs (user + system, from /proc, median of runs; on 2 cores, "
        "wrk takes its share too):",
        "",
    ]
    lines += _cpu_table(outcome, _present(outcome, CLOSED_LOOP))
    if outcome.fixed:
        lines += [
            "",
            f"## Fixed rate: {outcome.fixed_rate:.0f} requests/s (half of B1's median), "
            "latency from when each request was due",
            "",
        ]
        names = _present(outcome, FIXED_RATE, True)
        lines += _load_table(outcome, names, fixed=True)
        lines += _keep_up(outcome, True, outcome.fixed_rate)
        lines += _p99_split(outcome)
        lines += [
            "",
            "CPU time per request at this rate, µs (more than in closed loop: fewer requests "
            "share each wake-up of each process; the load generator takes its share too):",
            "",
        ]
        lines += _cpu_table(outcome, names, fixed=True)
        lines += _busy_share(outcome, names, outcome.fixed_rate)
    if outcome.fixed_low:
        lines += [
            "",
            f"Not a target, for comparison: {outcome.fixed_low_rate:.0f} requests/s "
            "(half of G's median), which G can carry:",
            "",
        ]
        names = _present(outcome, FIXED_RATE, "low")
        lines += _load_table(outcome, names, fixed="low")
        lines += _keep_up(outcome, "low", outcome.fixed_low_rate)
    if outcome.redis is not None:
        lines += ["", "## Redis per request (G, all measured runs)", ""]
        lines += _redis_lines(outcome.redis)
    if outcome.postgres is not None:
        lines += ["", "## Postgres per request (G, all measured runs)", ""]
        lines += _postgres_lines(outcome.postgres, s.get("pg_note", ""))
    if outcome.keys:
        lines += [
            "",
            "## Memory",
            "",
            "- VmRSS of the gateway's processes, measured after 8 x connections requests with "
            "one other key at full concurrency (so pools and buffers have grown already), "
            "then after one request per key:",
            f"- gateway RSS before warming {outcome.keys} keys: "
            f"{outcome.rss_before / 2**20:.1f} MiB; after: {outcome.rss_after / 2**20:.1f} MiB",
            f"- **{outcome.rss_per_key:.0f} bytes per cached key**",
        ]
    lines += ["", "## server.workers: 2 against a 2-process B1", ""]
    if outcome.runs.get("Gx2"):
        lines += _load_table(outcome, ["B1x2", "Gx2"])
        lines += ["", "CPU time per request, µs:", ""]
        lines += _cpu_table(outcome, ["B1x2", "Gx2"])
        lines += ["", f"G/B1 throughput with 2 processes each: {outcome.ratio('Gx2', 'B1x2'):.2f}"]
        if outcome.workers_redis is not None:
            rt = outcome.workers_redis.round_trips_per_request
            lines += [f"- Redis round trips per request (request path): {rt:.3f}"]
        if outcome.workers_postgres is not None:
            pg = outcome.workers_postgres
            lines += [
                f"- Postgres queries per request beyond the flushers: {pg.per_request:.4f} "
                f"({pg.observed} observed, {pg.allowance} allowed)"
            ]
    if outcome.workers_note:
        lines += [outcome.workers_note]
    lines += ["", "## Targets", "", "| target | measured | result |", "|---|---|---|"]
    for t in targets(outcome):
        lines.append(f"| {t.name} | {t.value} | {'PASS' if t.passed else 'FAIL'} |")
    if outcome.profile:
        lines += ["", "## Where the gateway spends its time (py-spy, one extra G run)", ""]
        lines += ["```", *outcome.profile, "```"]
    if outcome.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in outcome.notes]
    return "\n".join(lines) + "\n"


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _present(outcome: Outcome, names: list[str], fixed: bool | str = False) -> list[str]:
    """``names`` without the configurations this run did not measure (in closed loop,
    or at the fixed rate ``fixed`` names)."""
    source = outcome.source(fixed)
    return [name for name in names if source.get(name)]


def _p99_split(outcome: Outcome) -> list[str]:
    """How G's p99 above B1's divides: the Redis round trip alone, the gateway's request
    path, and the usage flush (when Gn ran)."""
    if not (outcome.fixed.get("B1r") and outcome.fixed.get("G")):
        return []
    b1, b1r, g = (outcome.median(name, "p99_ms", fixed=True) for name in ("B1", "B1r", "G"))
    line = (
        f"p99 above B1's: B1r {b1r - b1:+.2f} ms (the Redis round trip alone), "
        f"G {g - b1:+.2f} ms; G above B1r: {g - b1r:+.2f} ms (the gateway's own work"
    )
    if not outcome.fixed.get("Gn"):
        return ["", line + ")."]
    gn = outcome.median("Gn", "p99_ms", fixed=True)
    return [
        "",
        line + f"), of which G above Gn: {g - gn:+.2f} ms (the usage flush to Postgres) "
        f"and Gn above B1r: {gn - b1r:+.2f} ms (the request path).",
    ]
