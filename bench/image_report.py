"""The image workload's results: medians, targets, and its section of ``BENCHMARKS.md``."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = [
    "HEADING",
    "LABELS",
    "RELAY_HEADING",
    "ImageOutcome",
    "ImageRun",
    "ImageTarget",
    "merge",
    "render",
    "targets",
]

#: The section's first line: what :func:`merge` looks for in an existing report.
HEADING = "# Image workload: slow upstream, megabyte answers"
#: Where the hand-written measurements of the image relay start (kept by every run).
RELAY_HEADING = "# Image relay: what the gateway does with an image answer"

LABELS = {
    "B0": "B0 upstream, direct",
    "B1": "B1 bare aiohttp proxy",
    "G": "G gateway",
    "Gu": "G gateway, response_format url (file store)",
    "Gs3": "G gateway, response_format url (S3 store: moto)",
    "B1x2": "B1 bare proxy, 2 processes",
    "Gx2": "G gateway, server.workers: 2",
}
#: The order of the configurations within a (variant, n) group, as they are run.
ORDER = ["B0", "B1", "G", "Gu", "Gs3", "B1x2", "Gx2"]
#: Each gateway configuration and the bare proxy it is held to.
PAIRS = [("G", "B1"), ("Gu", "B1"), ("Gs3", "B1"), ("Gx2", "B1x2")]
#: Gu and Gs3 answer links to stored images (a few hundred bytes): they must carry at
#: least B1's throughput of the same images as base64 (the store's write is the cost).
MIN_THROUGHPUT_RATIOS = {"Gu": 1.0, "Gs3": 1.0}
MIN_THROUGHPUT_RATIO = 0.95
MAX_P99_RATIO = 1.05
MAX_RSS_RATIO = 1.25
_MIB = 2**20


@dataclass
class ImageRun:
    """One measured window of one configuration."""

    config: str
    variant: str
    n: int
    rps: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad_status: int
    socket_errors: int
    #: Answers shorter than n base64 images: a 200 that did not carry them.
    short_answers: int
    idle_rss: int
    peak_rss: int
    #: CPU seconds in the window: "server" (the proxy's or gateway's processes),
    #: "upstream", "store" (Gs3's S3 server), "generator".
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: Why the run was stopped early (the memory guard), else "".
    aborted: str = ""
    #: Non-200 answers by status.
    other_statuses: dict[str, int] = field(default_factory=dict)
    #: Whether RSS is this configuration's own (not the shared upstream's, for B0).
    own_rss: bool = True
    #: Seconds from the start to the window: the warm-up or more, until every client
    #: had an answer (``warmed_up``: they all had; else the window opened anyway).
    warmup_s: float = 0.0
    warmed_up: bool = True

    @property
    def errors(self) -> int:
        return self.bad_status + self.socket_errors + self.short_answers + bool(self.aborted)


@dataclass
class ImageTarget:
    name: str
    value: str
    passed: bool


@dataclass
class ImageOutcome:
    """Everything the image workload found."""

    settings: dict[str, Any] = field(default_factory=dict)
    runs: dict[tuple[str, int, str], list[ImageRun]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, run: ImageRun) -> None:
        self.runs.setdefault((run.variant, run.n, run.config), []).append(run)

    def get(self, variant: str, n: int, config: str) -> list[ImageRun]:
        return self.runs.get((variant, n, config), [])

    def median(self, variant: str, n: int, config: str, attr: str) -> float:
        values = [_value(r, attr) for r in self.get(variant, n, config)]
        return statistics.median(values) if values else math.nan

    def ratio(self, variant: str, n: int, top: str, bottom: str, attr: str) -> float:
        below = self.median(variant, n, bottom, attr)
        return self.median(variant, n, top, attr) / below if below else math.nan

    def groups(self) -> list[tuple[str, int]]:
        seen: dict[tuple[str, int], None] = {}
        for variant, n, _ in self.runs:
            seen.setdefault((variant, n), None)
        return list(seen)

    @property
    def all_runs(self) -> list[ImageRun]:
        return [r for runs in self.runs.values() for r in runs]


def _value(run: ImageRun, attr: str) -> float:
    if attr == "rss_growth":
        return run.peak_rss - run.idle_rss
    if attr == "cpu_ms_per_request":
        return run.cpu_s.get("server", math.nan) * 1000 / run.requests if run.requests else math.nan
    if attr == "cpu_ms_per_mb":
        mb = run.mb_per_s * _duration(run)
        return run.cpu_s.get("server", math.nan) * 1000 / mb if mb else math.nan
    if attr == "upstream_ms_per_request":
        up = run.cpu_s.get("upstream", math.nan)
        return up * 1000 / run.requests if run.requests else math.nan
    if attr == "store_ms_per_request":
        store = run.cpu_s.get("store", math.nan)
        return store * 1000 / run.requests if run.requests else math.nan
    value: float = getattr(run, attr)
    return value


def _duration(run: ImageRun) -> float:
    return run.requests / run.rps if run.rps else 0.0


def targets(outcome: ImageOutcome) -> list[ImageTarget]:
    """Per variant, n and pair: throughput, p99 and peak RSS against the bare proxy, and
    errors (in either: a bare proxy with errors says the machine, not the gateway, failed)."""
    found = []
    for variant, n in outcome.groups():
        for gateway, proxy in PAIRS:
            if not (outcome.get(variant, n, gateway) and outcome.get(variant, n, proxy)):
                continue
            where = f"{variant}, n={n}, {gateway}/{proxy}"
            rps, p99, rss = (
                outcome.ratio(variant, n, gateway, proxy, attr)
                for attr in ("rps", "p99_ms", "peak_rss")
            )
            least = MIN_THROUGHPUT_RATIOS.get(gateway, MIN_THROUGHPUT_RATIO)
            found.append(
                ImageTarget(f"{where}: throughput >= {least:.2f}", f"{rps:.2f}", rps >= least)
            )
            found.append(
                ImageTarget(
                    f"{where}: p99 <= {MAX_P99_RATIO:.2f} x",
                    f"{p99:.2f}",
                    p99 <= MAX_P99_RATIO,
                )
            )
            found.append(
                ImageTarget(
                    f"{where}: peak RSS <= {MAX_RSS_RATIO:.2f} x",
                    f"{rss:.2f}",
                    rss <= MAX_RSS_RATIO,
                )
            )
            errors = {
                c: sum(r.errors for r in outcome.get(variant, n, c)) for c in (gateway, proxy)
            }
            found.append(
                ImageTarget(
                    f"{where}: zero errors",
                    f"{gateway} {errors[gateway]}, {proxy} {errors[proxy]}",
                    not any(errors.values()),
                )
            )
    return found


def _f(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _load_table(outcome: ImageOutcome, variant: str) -> list[str]:
    lines = [
        "| n | configuration | RPS | MB/s | p50 ms | p99 ms | non-200 / socket / short "
        "| RPS of each run | warm-up s |",
        "|---:|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for group_variant, n in outcome.groups():
        if group_variant != variant:
            continue
        for config in ORDER:
            runs = outcome.get(variant, n, config)
            if not runs:
                continue
            med = partial(outcome.median, variant, n, config)
            errors = (
                f"{sum(r.bad_status for r in runs)} / {sum(r.socket_errors for r in runs)} / "
                f"{sum(r.short_answers for r in runs)}"
            )
            statuses: dict[str, int] = {}
            for r in runs:
                for status, count in r.other_statuses.items():
                    statuses[status] = statuses.get(status, 0) + count
            if statuses:
                errors += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) + ")"
            aborted = [r.aborted for r in runs if r.aborted]
            if aborted:
                errors += f" ({len(aborted)} run(s) stopped: {aborted[0]})"
            lines.append(
                f"| {n} | {LABELS[config]} | {_f(med('rps'))} | {_f(med('mb_per_s'))} | "
                f"{_f(med('p50_ms'))} | {_f(med('p99_ms'))} | {errors} | "
                + ", ".join(f"{r.rps:.0f}" for r in runs)
                + f" | {_f(med('warmup_s'), 1)}"
                + ("" if all(r.warmed_up for r in runs) else " (not every client answered)")
                + " |"
            )
    return lines


def _resource_table(outcome: ImageOutcome, variant: str, connections: int) -> list[str]:
    lines = [
        "| n | configuration | idle RSS MiB | peak RSS MiB | RSS per request in flight KiB "
        "| CPU ms / request | CPU ms / MB | upstream CPU ms / request | S3 server CPU ms / "
        "request | load generator, % of a core |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group_variant, n in outcome.groups():
        if group_variant != variant:
            continue
        for config in ORDER:
            runs = outcome.get(variant, n, config)
            if not runs:
                continue
            med = partial(outcome.median, variant, n, config)
            own = runs[0].own_rss
            idle = _f(med("idle_rss") / _MIB) if own else "-"
            peak = _f(med("peak_rss") / _MIB) if own else "-"
            per = _f(med("rss_growth") / connections / 1024) if own else "-"
            server = (
                (_f(med("cpu_ms_per_request"), 1), _f(med("cpu_ms_per_mb"), 2))
                if own
                else ("-", "-")
            )
            generator = statistics.median(
                r.cpu_s.get("generator", math.nan) * 100 / _duration(r) if _duration(r) else 0
                for r in runs
            )
            lines.append(
                f"| {n} | {LABELS[config]} | {idle} | {peak} | {per} | {server[0]} | "
                f"{server[1]} | {_f(med('upstream_ms_per_request'), 1)} | "
                f"{_f(med('store_ms_per_request'), 1)} | {_f(generator)} |"
            )
    return lines


def render(outcome: ImageOutcome) -> str:
    s = outcome.settings
    lines = [
        HEADING,
        "",
        f"Date: {s['date']}  ",
        f"Command: `{s['command']}`  ",
        f"Machine: {s.get('machine', 'unknown')}  ",
        f"Servers (G and the bare proxies) run by: {s.get('servers', 'this Python')}  ",
        f"Upstream (`bench/image_upstream.py`): answers after {s['delay']:g} s with n images "
        f"of {s['size_kib']} KiB ({s['image_bytes']:,} bytes: {s['width']}x{s['height']} "
        "random RGB pixels in a PNG whose IDAT is stored, not compressed; CRCs and Adler-32 "
        "right), each body encoded once at start. Two variants: `b64_json` (the images "
        f"in the JSON answer, {s['b64_bytes']:,} bytes each) and `url` (the answer points "
        "at the upstream, which serves the PNG; G downloads it, and B1 with `--download` "
        "fetches it and answers in base64 as G does).  ",
        f"Load (`bench/image_load.py`): {s['connections']} clients in closed loop, their "
        f"first requests spread over {s['stagger']:g} s; a warm-up of {s['warmup']:g} s or "
        "more, until every client has had an answer (the table shows how long), then a "
        f"{s['duration']:g} s window: only answers completed in it count, latency from "
        f"each request's sending; `POST {s['body_shape']}`. {s['runs']} run(s) per "
        "configuration, interleaved (for each run, variant and n: "
        + ", ".join(c for c in ORDER if c in s.get("configs", ORDER))
        + "); medians shown.  ",
        "Every measured window gets fresh proxy or gateway processes, so a peak RSS is its "
        "own run's; idle RSS is read once they answer /healthz (both workers up), before any "
        "image request. Peak RSS: VmRSS of the serving processes (a supervisor and its "
        f"workers summed, both B1 processes summed), sampled every {s['sample_ms']} ms from "
        "/proc over the warm-up and the window. RSS per request in flight: (peak - idle) / "
        f"{s['connections']}. CPU: user + system of the serving processes over the window, "
        "per answer and per MB (10^6 bytes) delivered.  ",
        f"Upstream connections per serving process: {s['pool']} (B1's aiohttp connector "
        "limit; G's `server.upstream_max_connections`, whose default of 200 would hold a "
        "process to 200 requests in flight"
        + (f", {200 / s['delay']:.0f}/s at D = {s['delay']:g} s" if s["delay"] else "")
        + "), so neither queues on its "
        f"pool. G: `type: {s['backend']}`, `sizes: [{s['size']}]`, `timeout_seconds: "
        f"{s['upstream_timeout']:g}` (past the load generator's {s['timeout']:g} s), access "
        "log off; the url "
        f"variant's config {s['egress']}.  ",
        "Gu and Gs3 ask for `response_format: url` (with the `b64_json` upstream): the "
        "gateway stores each image and answers a link of a few hundred bytes; Gu's store "
        + (
            f"is `file://` under `{s['store_dir']}` (`--image-store-dir`)"
            if s.get("store_dir")
            else "is `file://` in the bench's temporary directory"
        )
        + " and emptied after each window, Gs3's `s3://<bucket>/images` on "
        "a `moto` server (`python -m moto.server`, a fresh one per window on a free port, "
        "objects in its temporary files). moto is a Python server: Gs3 measures moto as "
        "much as the gateway. Its CPU is shown apart (S3 server CPU, not in the gateway's "
        "figures), and its RSS is not in Gs3's.  ",
        f"Memory guard: a run whose serving processes pass {s['rss_limit'] / 2**30:.1f} GiB "
        "is stopped (its processes killed) and counted as failed.",
        "",
    ]
    connections = s["connections"]
    for variant in s["variants"]:
        title = "`b64_json`" if variant == "b64" else "`url` (the gateway downloads)"
        lines += [f"## Images as {title}", ""]
        lines += _load_table(outcome, variant)
        lines += ["", "Memory and CPU (medians):", ""]
        lines += _resource_table(outcome, variant, connections)
        lines += [""]
    lines += [
        "## Image targets",
        "",
        "G against B1 and `server.workers: 2` against the 2-process B1, per variant and n: "
        f"throughput >= {MIN_THROUGHPUT_RATIO:.2f} x (Gu and Gs3, links to the same images "
        "B1 carries as base64: >= "
        + ", ".join(f"{c} {v:.2f} x" for c, v in MIN_THROUGHPUT_RATIOS.items())
        + f"), p99 <= {MAX_P99_RATIO:.2f} x, peak "
        f"RSS <= {MAX_RSS_RATIO:.2f} x, and no error in either (non-200, socket errors, "
        "answers shorter than n base64 images, a run stopped by the memory guard).",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    for t in targets(outcome):
        lines.append(f"| {t.name} | {t.value} | {'PASS' if t.passed else 'FAIL'} |")
    if outcome.notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {n}" for n in outcome.notes]
    return "\n".join(lines) + "\n"


def merge(existing: str, tiny: str | None, image: str | None) -> str:
    """The report file's new text: each scenario's section replaced when it ran, kept from
    ``existing`` when it did not (the image section starts at :data:`HEADING`); the
    relay's own measurements, written by hand at the end (from :data:`RELAY_HEADING`),
    are always kept."""
    rest, found_relay, relay = existing.partition(RELAY_HEADING)
    old_tiny, found, old_image = rest.partition(HEADING)
    old_image = found + old_image if found else ""
    sections = [
        tiny if tiny is not None else old_tiny,
        image if image is not None else old_image,
        found_relay + relay,
    ]
    return "\n".join(s.rstrip("\n") + "\n" for s in sections if s.strip())
