"""``python -m bench.run``: the gateway (G) against a bare proxy (B1) and the upstream (B0).

One run on this machine: start a fake upstream, the bare aiohttp proxy (B1) and two
variants of it (B1h: with the gateway's upstream client; B1r: plus one Redis round trip
per request), and the gateway (private database, its own Redis, N warm API keys); drive
each with the same wrk load, interleaved (B0, B1, B1h, B1r, G, Gl, B0, ...), ``--runs``
times; then a fixed-rate latency run at half of B1's throughput for B1, B1r, G and Gn
(G with its usage flush held back, which shows what the flush costs); then
``server.workers: 2`` against a 2-process B1 when the gateway supports it. Prints the
table and writes ``BENCHMARKS.md`` (not with ``--smoke``). Everything it started is
stopped, and its database dropped, on any exit.

    python -m bench.run [--duration 10] [--connections 32] [--runs 3] [--keys 10000]
    python -m bench.run --smoke     # a few seconds; exits non-zero unless all is well
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import aiohttp
import asyncpg
import redis
import uvloop

from bench import cluster_scenario, image_report, jobs_report, report
from bench.counters import PostgresCounter, PostgresUsage, RedisUsage, redis_commandstats
from bench.gateway_setup import (
    FLUSH_INTERVAL_S,
    HELD_FLUSH_INTERVAL_S,
    HELD_PREFIX,
    ROOT,
    BenchDatabase,
    BenchRedis,
    backend_type,
    create_keys,
    gateway_config,
    start_gateway,
    warm,
    workers_supported,
)
from bench.image_scenario import (
    ImageScenario,
    ImageSettings,
    default_rss_limit,
    image_settings_valid,
)
from bench.jobs_scenario import JobsOutcome, JobsScenario, JobsSettings
from bench.procs import (
    SERVER_PYTHON_ENV,
    Child,
    Children,
    cpu_seconds,
    free_port,
    python_command,
    raise_on_termination_signals,
    server_command,
    server_python,
    tree_rss_bytes,
    wait_http,
)
from bench.wrk import LoadResult, ensure_wrk, parse_wrk_output, write_lua, wrk_version

__all__ = ["main"]

PATH = "/v1/images/generations"
#: A Postgres 15 backend that goes idle reports its statistics within 10 s.
PG_IDLE_REPORT_S = 11.0
#: How long after a run its statistics are read.
PG_SETTLE_S = 1.5
#: Smoke: Postgres work beyond the flusher's, per request, still counted as ~0.
SMOKE_PG_TOLERANCE = 0.01
#: API keys the image workload uses in turn (a fresh G loads each once).
IMAGE_KEYS = 100
#: The image workload's smoke run: small, short, every configuration.
SMOKE_IMAGE = {"delay_s": 0.2, "size_kib": 64, "connections": 8, "duration_s": 0.6}


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, children: Children) -> None:
        self.args = args
        self.workdir = workdir
        self.children = children
        self.wrk: str | None = None
        self.lua = write_lua(workdir)
        self.keys_file = workdir / "keys.txt"
        self.keys: list[str] = []
        self.wrk_command = ""
        self.db = BenchDatabase(os.environ.get("DATABASE_URL") or args.database_url)
        self.redis = BenchRedis(
            os.environ.get("REDIS_URL") or args.redis_url,
            children,
            workdir,
            private=not args.shared_redis,
        )
        self.pg: PostgresCounter | None = None
        self.pg_busy_until = 0.0
        #: Seconds of unmeasured load before each measured G run (see measure_gateway).
        self.prime_s = 0
        if not args.smoke:
            from gateway.config import KeysConfig

            ttl = args.local_ttl if args.local_ttl is not None else KeysConfig().local_ttl_seconds
            self.prime_s = math.ceil(ttl) + 2 if ttl <= 60 else 0
        self.backend = backend_type()
        self.outcome = report.Outcome(settings={})
        self.git_at_start = ""
        #: The gateways running on the bench database, with their process counts.
        self._gateways: dict[Child, int] = {}
        #: Per configuration, the processes that serve it (for CPU time per request).
        self.roles: dict[str, dict[str, list[int]]] = {}
        #: The Postgres server (all its processes), when it runs on this machine.
        self.postgres_pids: list[int] = []
        #: Gn's counts were still pending in Redis after its fixed-rate runs.
        self.held_back = False
        self.primer = ""
        self.image: image_report.ImageOutcome | None = None
        self.jobs: JobsOutcome | None = None
        #: ``--redis-cluster``: Gc's private Redis Cluster and its figures.
        self.cluster: cluster_scenario.BenchCluster | None = None
        self.cluster_outcome: cluster_scenario.ClusterOutcome | None = None

    # -- load ------------------------------------------------------------------

    def closed_loop(self, name: str, base: str) -> LoadResult:
        """One timed closed-loop run, with the CPU time its servers used per request."""
        return self.with_cpu(name, partial(self._closed_loop, name, base))

    def with_cpu(self, name: str, load: Callable[[], LoadResult]) -> LoadResult:
        """``load()``, with the CPU time ``name``'s processes used per request."""
        roles = self.roles.get(name, {})
        before = {role: cpu_seconds(pids) for role, pids in roles.items()}
        result = load()
        if result.requests:
            result.extra["cpu_us_per_request"] = {
                role: (cpu_seconds(pids) - before[role]) * 1e6 / result.requests
                for role, pids in roles.items()
            }
        return result

    def _closed_loop(self, name: str, base: str, duration: int | None = None) -> LoadResult:
        url = base + PATH
        a = self.args
        duration = duration or a.duration
        if self.wrk is None:
            return self.python_load(name, url, rate=0, duration=duration)
        argv = [self.wrk, "-t", str(a.threads), "-c", str(a.connections), "-d", f"{duration}s"]
        argv += [
            "--latency",
            "--timeout",
            "5s",
            "-s",
            str(self.lua),
            url,
            "--",
            str(self.keys_file),
        ]
        if not self.wrk_command and duration == a.duration:
            self.wrk_command = shlex.join(argv)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return parse_wrk_output(name, out.stdout)

    def python_load(
        self, name: str, url: str, rate: float, duration: int | None = None
    ) -> LoadResult:
        a = self.args
        duration = duration or a.duration
        argv = python_command("-m", "bench.constant_rate", "--url", url)
        argv += ["--keys-file", str(self.keys_file), "--rate", f"{rate:.1f}"]
        argv += ["--duration", str(duration), "--connections", str(a.connections)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(f"bench.constant_rate failed:\n{out.stdout}\n{out.stderr}")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        bad = sum(v for k, v in summary["statuses"].items() if k != "200")
        return LoadResult(
            name=name,
            rps=summary["achieved_rate"],
            p50_ms=summary["p50_ms"],
            p99_ms=summary["p99_ms"],
            # and the requests that opened the connections, which the server saw too
            requests=summary["requests"] + a.connections,
            duration_s=summary["duration_s"],
            bad_status=bad,
            socket_errors=sum(summary["errors"].values()),
            tool="python",
            extra=summary,
        )

    @staticmethod
    def show(result: LoadResult, label: str = "") -> None:
        problems = ""
        if result.bad_status or result.socket_errors:
            problems = f"  (non-2xx {result.bad_status}, socket errors {result.socket_errors})"
        log(
            f"{label or result.name}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, {result.requests} requests{problems}"
        )

    # -- the gateway's Postgres quiet time and warm keys -----------------------

    def wait_pg_quiet(self) -> None:
        remaining = self.pg_busy_until - time.monotonic()
        if remaining > 0:
            log(f"waiting {remaining:.1f} s for Postgres statistics to settle")
            time.sleep(remaining)

    def warm_keys(self, base: str, repeats: int) -> None:
        """Touch every key (again) right before a run; wait out Postgres if that used it."""
        assert self.pg is not None
        for attempt in (1, 2):
            self.wait_pg_quiet()
            before, started = self.pg.snapshot(), time.monotonic()
            statuses = warm(
                base + PATH, self.keys, concurrency=self.args.connections, repeats=repeats
            )
            if set(statuses) != {200}:
                raise RuntimeError(f"warming the keys got statuses {dict(statuses)}")
            time.sleep(PG_SETTLE_S)
            window = time.monotonic() - started
            usage = self.pg.usage(
                before,
                self.pg.snapshot(),
                requests=len(self.keys),
                window_s=window,
                processes=self.flushers,
                flush_interval=FLUSH_INTERVAL_S,
            )
            if usage.beyond_flusher == 0:
                return
            # Keys came from Postgres (their Redis entries expired): let those statistics
            # land before measuring, then warm again (from Redis, now) so the process
            # caches are fresh when the run starts.
            self.pg_busy_until = time.monotonic() + PG_IDLE_REPORT_S
            if attempt == 1:
                log(f"warming used Postgres ({usage.observed} transactions); warming again")
        log("warming used Postgres again; measuring after its statistics settle")
        self.wait_pg_quiet()

    def measure_gateway(
        self, name: str, base: str, repeats: int
    ) -> tuple[LoadResult, RedisUsage, PostgresUsage]:
        assert self.pg is not None
        self.warm_keys(base, repeats)
        if self.prime_s:
            # Run the same load, unmeasured, for one key-cache TTL first: the measured run
            # then sees the steady state of the refreshes, not an artefact of when the
            # keys were warmed (all fresh, or all turning stale together).
            self.show(self._closed_loop(name, base, self.prime_s), f"{name} (priming)")
        with self.redis.client() as client:
            redis_before = redis_commandstats(client)
            pg_before, started = self.pg.snapshot(), time.monotonic()
            result = self.closed_loop(name, base)
            redis_after = redis_commandstats(client)
        time.sleep(PG_SETTLE_S)
        pg_after, window = self.pg.snapshot(), time.monotonic() - started
        # The gateway served the requests wrk counted plus those still in flight when
        # it stopped (at most one per connection); each ran admit.lua exactly once.
        redis_usage = RedisUsage.between(redis_before, redis_after, result.requests)
        requests = result.requests
        if result.requests <= redis_usage.admissions <= result.requests + self.args.connections:
            requests = redis_usage.admissions
        redis_usage.requests = requests
        pg_usage = self.pg.usage(
            pg_before,
            pg_after,
            requests=requests,
            window_s=window,
            processes=self.flushers,
            flush_interval=FLUSH_INTERVAL_S,
        )
        per = redis_usage.per_request
        log(
            f"{name}: Redis {redis_usage.round_trips_per_request:.3f} EVALSHA/request on the "
            f"request path, {per(redis_usage.evalsha):.3f} in all (admissions "
            f"{per(redis_usage.admissions):.3f}, key refreshes {per(redis_usage.lookups):.3f}, "
            f"flusher {per(redis_usage.flusher):.3f}); Postgres {pg_usage.observed} "
            f"{pg_usage.method} in {window:.1f} s, {pg_usage.beyond_flusher} beyond the flusher"
        )
        return result, redis_usage, pg_usage

    def measure_cluster(self, base: str) -> LoadResult:
        """One Gc run, its EVALSHA calls summed over the cluster's primaries."""
        assert self.cluster is not None
        assert self.cluster_outcome is not None
        self.warm_keys(base, 1)
        if self.prime_s:  # as for G: the steady state of the key refreshes
            self.show(self._closed_loop("Gc", base, self.prime_s), "Gc (priming)")
        before = self.cluster.commandstats()
        result = self.closed_loop("Gc", base)
        usage = RedisUsage.between(before, self.cluster.commandstats(), result.requests)
        # As for G: wrk's count plus the few still in flight when it stopped.
        if result.requests <= usage.admissions <= result.requests + self.args.connections:
            usage.requests = usage.admissions
        self.cluster_outcome.add(result, usage)
        log(
            f"Gc: Redis {usage.round_trips_per_request:.3f} EVALSHA/request on the request "
            f"path (summed over {len(self.cluster.ports)} primaries), "
            f"{usage.per_request(usage.evalsha):.3f} in all"
        )
        return result

    def pending_counters(self, prefix: str) -> int:
        """Counters under ``prefix`` whose count Postgres does not have yet."""
        from gateway.redis.layout import SHARDS, RedisLayout

        layout = RedisLayout(prefix)
        with self.redis.client() as client:
            return sum(int(client.scard(layout.pending(shard))) for shard in range(SHARDS))

    def gn_held_back(self) -> bool:
        """Gn still holds every key's count in Redis, and flushes none of them for two flush
        intervals (a Gn that flushed would have written some by then)."""
        prefix = self.redis.prefix + HELD_PREFIX
        deadline = time.monotonic() + 2 * FLUSH_INTERVAL_S + 0.5
        while time.monotonic() < deadline:
            if self.pending_counters(prefix) < len(self.keys):
                return False
            time.sleep(0.1)
        return True

    def wait_flushed(self, timeout: float = 30.0) -> None:
        """Until G's usage is all in Postgres: no counter of its Redis prefix pending."""
        deadline = time.monotonic() + timeout
        while self.pending_counters(self.redis.prefix):
            if time.monotonic() > deadline:
                log(f"G's usage flush still pending after {timeout:.0f} s; going on")
                return
            time.sleep(0.05)

    # -- set-up --------------------------------------------------------------------

    def start_upstream(self) -> tuple[str, list[int]]:
        port = free_port()
        argv = python_command("-m", "bench.upstream", "--port", str(port))
        child = self.children.start("upstream", argv, self.workdir / "upstream.log", cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", child)
        return base, [child.pid]

    def start_proxy(
        self, upstream: str, processes: int, client: str = "aiohttp", redis_url: str = ""
    ) -> tuple[str, list[int]]:
        port = free_port()
        argv = server_command("-m", "bench.bare_proxy", "--port", str(port))
        argv += ["--upstream", upstream + "/v1", "--client", client]
        if redis_url:
            argv += ["--redis", redis_url]
        if processes > 1:
            argv.append("--reuse-port")
        pids = []
        for i in range(processes):
            child = self.children.start(
                f"bare-proxy-{port}-{i}", argv, self.workdir / f"proxy-{port}-{i}.log", cwd=ROOT
            )
            wait_http(f"http://127.0.0.1:{port}/healthz", child)
            pids.append(child.pid)
        return f"http://127.0.0.1:{port}", pids

    def start_gateway(
        self,
        upstream: str,
        workers: int | None,
        name: str,
        *,
        access_log: bool = False,
        flush: bool = True,
        cluster: cluster_scenario.BenchCluster | None = None,
        credits: bool | None = None,
    ) -> tuple[Child, str]:
        """A gateway on the bench database. ``flush=False`` (Gn) holds its usage back for
        the whole run, under a Redis prefix of its own, so no other gateway's flusher
        writes its counts either. ``cluster``: on that Redis Cluster instead (Gc).
        ``credits``: the keys' plan has monthly_credits (default: ``--credits``)."""
        port = free_port()
        prefix = self.redis.prefix + ("" if flush else HELD_PREFIX)
        raw = gateway_config(
            access_log=access_log,
            port=port,
            database_url=self.db.url,
            redis_url=cluster.url if cluster is not None else self.redis.url,
            redis_prefix=prefix + (cluster_scenario.CLUSTER_PREFIX if cluster else ""),
            upstream_url=upstream + "/v1",
            backend=self.backend,
            workers=workers,
            local_ttl=self.args.local_ttl,
            flush_interval=FLUSH_INTERVAL_S if flush else HELD_FLUSH_INTERVAL_S,
            credits=self.args.credits if credits is None else credits,
        )
        child = start_gateway(self.children, name, raw, self.workdir)
        self._gateways[child] = (workers or 1) if flush else 0
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", child, timeout=60)
        return child, base

    def stop_gateway(self, child: Child) -> None:
        self._gateways.pop(child, None)
        self.children.stop(child)

    def postgres_role(self) -> dict[str, list[int]]:
        """The Postgres server's processes, for a gateway's CPU table (none if remote)."""
        return {"postgres": self.postgres_pids} if self.postgres_pids else {}

    @property
    def flushers(self) -> int:
        """Gateway processes that flush usage into the bench database: each may write one
        batch per flush interval (G and Gl share it, as do Gx2's two workers; Gn does not
        flush during a run)."""
        return sum(self._gateways.values())

    def sanity(self, label: str, base: str, key: str) -> None:
        """One request: 200 with a JSON body holding a PNG, or stop here."""
        import base64

        request = urllib.request.Request(  # noqa: S310 - loopback only
            base + PATH,
            data=b'{"prompt": "bench", "size": "256x256"}',
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        if status != 200:
            raise RuntimeError(f"{label} answered {status}: {body[:500]!r}")
        image = base64.b64decode(json.loads(body)["data"][0]["b64_json"])
        if not image.startswith(b"\x89PNG"):
            raise RuntimeError(f"{label} did not return a PNG")

    # -- the run ---------------------------------------------------------------------

    def run(self) -> int:
        """Both scenarios (or the one ``--scenario`` names) on one database and Redis."""
        a = self.args
        o = self.outcome
        o.machine = report.machine_info()
        self.git_at_start = _git_state()
        tiny = a.scenario in ("tiny", "all")
        if tiny:
            self.wrk, hint = ensure_wrk()
            if self.wrk is None:
                if not a.smoke:
                    print(f"error: {hint}", file=sys.stderr)
                    return 2
                log(f"{hint}; the smoke run uses the Python load generator instead")
        has_workers = workers_supported()
        generator = "wrk" if self.wrk else "python (bench.constant_rate)"
        log(
            f"backend type: {self.backend} "
            f"({'openai is registered' if self.backend == 'openai' else 'no openai type yet'}); "
            f"server.workers: {'supported' if has_workers else 'not supported yet'}"
            + (f"; load generator: {generator}" if tiny else "")
        )
        self.redis.start()
        keys = a.keys if tiny else IMAGE_KEYS
        log(f"creating database {self.db.name} and {keys} keys")
        self.db.create()
        self.pg = PostgresCounter(self.db.admin_url, self.db.url, self.db.name)
        self.pg.prepare()
        all_keys = create_keys(self.db.url, keys + 1)
        self.primer, self.keys = all_keys[0], all_keys[1:]
        self.keys_file.write_text("\n".join(self.keys) + "\n")

        tiny_text = image_text = None
        if tiny:
            before = set(self.children.running())
            tiny_text = self.run_tiny(has_workers)
            for child in self.children.running():  # all but Redis: the image runs use it
                if child not in before:
                    self.stop_gateway(child)
        if a.scenario in ("image", "all"):
            image_text = self.run_image(has_workers)
        jobs_text = None
        if a.scenario in ("jobs", "all"):
            jobs_text = self.run_jobs()
        return self.verdict(tiny_text, image_text, jobs_text)

    def run_tiny(self, has_workers: bool) -> str:
        """The fast-upstream scenario; its report."""
        a = self.args
        o = self.outcome
        primer = self.primer
        upstream, upstream_pids = self.start_upstream()
        proxy, proxy_pids = self.start_proxy(upstream, 1)
        lean, lean_pids = self.start_proxy(upstream, 1, client="gateway")
        hop, hop_pids = self.start_proxy(upstream, 1, redis_url=self.redis.url)
        gateway, gw = self.start_gateway(upstream, 1 if has_workers else None, "gateway")
        logged, gwl = self.start_gateway(
            upstream, 1 if has_workers else None, "gateway-access-log", access_log=True
        )
        held, gwn = self.start_gateway(
            upstream, 1 if has_workers else None, "gateway-flush-held", flush=False
        )
        # Gcr: G charging credits (unless every G does): what the credit check costs.
        metered, gcr = (
            (None, "")
            if a.credits
            else self.start_gateway(
                upstream, 1 if has_workers else None, "gateway-credits", credits=True
            )
        )
        clustered = ""
        if a.redis_cluster:
            self.cluster = cluster_scenario.BenchCluster(self.children, self.workdir)
            self.cluster.start()
            self.cluster_outcome = cluster_scenario.ClusterOutcome(url=self.cluster.url)
            log(f"Redis Cluster: {self.cluster.url}")
            on_cluster, clustered = self.start_gateway(
                upstream, 1 if has_workers else None, "gateway-cluster", cluster=self.cluster
            )
        redis_pids = [self.redis.child.pid] if self.redis.child else []
        assert self.pg is not None
        server = self.pg.server_pid()
        self.postgres_pids = [server] if server is not None else []
        self.roles = {
            "B0": {"upstream": upstream_pids},
            "B1": {"proxy or gateway": proxy_pids, "upstream": upstream_pids},
            "B1h": {"proxy or gateway": lean_pids, "upstream": upstream_pids},
            "B1r": {
                "proxy or gateway": hop_pids,
                "upstream": upstream_pids,
                "redis": redis_pids,
            },
            "G": {
                "proxy or gateway": [gateway.pid],
                "upstream": upstream_pids,
                "redis": redis_pids,
                **self.postgres_role(),
            },
            "Gl": {
                "proxy or gateway": [logged.pid],
                "upstream": upstream_pids,
                "redis": redis_pids,
                **self.postgres_role(),
            },
            "Gn": {
                "proxy or gateway": [held.pid],
                "upstream": upstream_pids,
                "redis": redis_pids,
                **self.postgres_role(),
            },
        }
        if metered is not None:
            self.roles["Gcr"] = {
                "proxy or gateway": [metered.pid],
                "upstream": upstream_pids,
                "redis": redis_pids,
                **self.postgres_role(),
            }
        if self.cluster is not None:
            self.roles["Gc"] = {
                "proxy or gateway": [on_cluster.pid],
                "upstream": upstream_pids,
                "redis": self.cluster.pids,
                **self.postgres_role(),
            }

        for label, base in (
            ("B0", upstream),
            ("B1", proxy),
            ("B1h", lean),
            ("B1r", hop),
            ("G", gw),
            ("Gl", gwl),
            ("Gn", gwn),
            *((("Gcr", gcr),) if gcr else ()),
            *((("Gc", clustered),) if clustered else ()),
        ):
            self.sanity(label, base, primer)

        o.keys = len(self.keys)
        # Exercise every path at full concurrency first (buffers, pools, tasks), so the
        # growth measured next is the keys' own.
        statuses = warm(gw + PATH, [primer] * a.connections * 8, concurrency=a.connections)
        if set(statuses) != {200}:
            raise RuntimeError(f"the primer key got statuses {dict(statuses)}")
        o.rss_before = tree_rss_bytes(gateway.pid)
        log(f"warming {len(self.keys)} keys (RSS before: {o.rss_before / 2**20:.1f} MiB)")
        statuses = warm(gw + PATH, self.keys, concurrency=a.connections)
        if set(statuses) != {200}:
            raise RuntimeError(f"warming the keys got statuses {dict(statuses)}")
        o.rss_after = tree_rss_bytes(gateway.pid)
        self.pg_busy_until = time.monotonic() + PG_IDLE_REPORT_S  # its lookups hit Postgres
        log(f"RSS after: {o.rss_after / 2**20:.1f} MiB -> {o.rss_per_key:.0f} bytes per key")
        statuses = warm(gwn + PATH, self.keys, concurrency=a.connections)
        if set(statuses) != {200}:
            raise RuntimeError(f"warming the keys on Gn got statuses {dict(statuses)}")
        if clustered:
            statuses = warm(clustered + PATH, self.keys, concurrency=a.connections)
            if set(statuses) != {200}:
                raise RuntimeError(f"warming the keys on Gc got statuses {dict(statuses)}")

        redis_total: RedisUsage | None = None
        pg_total: PostgresUsage | None = None
        for run in range(1, a.runs + 1):
            for name, base in (("B0", upstream), ("B1", proxy), ("B1h", lean), ("B1r", hop)):
                result = self.closed_loop(name, base)
                self.show(result, f"{name} run {run}/{a.runs}")
                o.runs.setdefault(name, []).append(result)
            result, r_usage, p_usage = self.measure_gateway("G", gw, 1)
            self.show(result, f"G run {run}/{a.runs}")
            o.runs.setdefault("G", []).append(result)
            # The same gateway with its access log on: throughput and CPU only.
            warm(gwl + PATH, self.keys, concurrency=a.connections)
            result = self.closed_loop("Gl", gwl)
            self.show(result, f"G with access log run {run}/{a.runs}")
            o.runs.setdefault("Gl", []).append(result)
            if gcr:
                warm(gcr + PATH, self.keys, concurrency=a.connections)
                result = self.closed_loop("Gcr", gcr)
                self.show(result, f"G charging credits run {run}/{a.runs}")
                o.runs.setdefault("Gcr", []).append(result)
            if clustered:
                result = self.measure_cluster(clustered)
                self.show(result, f"Gc (Redis Cluster) run {run}/{a.runs}")
                o.runs.setdefault("Gc", []).append(result)
            redis_total = r_usage if redis_total is None else redis_total.add(r_usage)
            pg_total = p_usage if pg_total is None else pg_total.add(p_usage)
        o.redis, o.postgres = redis_total, pg_total

        o.fixed_rate = max(1.0, o.median("B1", "rps") / 2)
        self.fixed_rate_runs(o.fixed, o.fixed_rate, proxy, hop, gw, gwn)
        if o.median("G", "rps") < o.fixed_rate:
            # G cannot carry that rate at all; also compare latency at a rate it can carry.
            o.fixed_low_rate = max(1.0, o.median("G", "rps") / 2)
            self.fixed_rate_runs(o.fixed_low, o.fixed_low_rate, proxy, hop, gw, gwn)
        # Gn's figures mean something only if its counts did wait in Redis all along.
        self.held_back = self.gn_held_back()
        if not self.held_back:
            o.notes.append("Gn's usage was flushed during the run: its row is not G unflushed")

        if a.profile:
            o.profile = self.profile(gateway, gw, Path(a.profile))

        if a.smoke:
            o.workers_note = "Skipped in the smoke run."
        elif not has_workers:
            o.workers_note = "workers: not supported yet (ServerConfig has no `workers` field)."
        else:
            self.stop_gateway(gateway)
            self.stop_gateway(logged)
            self.stop_gateway(held)
            if metered is not None:
                self.stop_gateway(metered)
            self.run_workers(upstream, upstream_pids, redis_pids)

        self.fill_settings()
        text = report.render(o)
        if self.cluster is not None and self.cluster_outcome is not None:
            self.cluster_outcome.per_node = self.cluster.per_node_evalsha()
            redis_per = o.redis.round_trips_per_request if o.redis else None
            text += "\n" + cluster_scenario.render(self.cluster_outcome, o.runs, redis_per)
        print()
        print(text)
        return text

    def run_image(self, has_workers: bool) -> str:
        """The image workload (:mod:`bench.image_scenario`); its report."""
        a = self.args

        def common(port: int) -> dict[str, object]:
            return {
                "port": port,
                "database_url": self.db.url,
                "redis_url": self.redis.url,
                "redis_prefix": self.redis.prefix,
                "backend": self.backend,
                "local_ttl": a.local_ttl,
            }

        scenario = ImageScenario(
            image_settings(a),
            children=self.children,
            workdir=self.workdir,
            keys=self.keys[:IMAGE_KEYS],
            gateway_common=common,
            backend=self.backend,
            log=log,
            workers=has_workers,
        )
        self.image = scenario.run()
        self.image.settings["date"] = report.now_utc()
        self.image.settings["command"] = self.outcome_command()
        if _git_state() != self.git_at_start:
            self.image.notes.append(
                f"The gateway's source changed during the run: {self.git_at_start} at the "
                f"start, {_git_state()} at the end."
            )
        machine = self.outcome.machine
        self.image.settings["servers"] = servers_description()
        self.image.settings["machine"] = (
            f"{machine.get('nproc', '?')} cores ({machine.get('cpu', '?')}), "
            f"{machine.get('ram', '?')}; load average at start "
            f"{machine.get('load average at start', '?')}, at end "
            + " ".join(f"{v:.2f}" for v in os.getloadavg())
            + " (the other work on the machine shares its cores)"
        )
        text = image_report.render(self.image)
        print()
        print(text)
        return text

    def run_jobs(self) -> str:
        """The jobs scenario (:mod:`bench.jobs_scenario`); its report."""
        a = self.args
        scenario = JobsScenario(
            JobsSettings(
                delay_s=a.jobs_delay,
                size_kib=a.jobs_size_kib,
                connections=a.jobs_connections,
                duration_s=1.0 if a.smoke else a.jobs_duration,
            ),
            children=self.children,
            workdir=self.workdir,
            keys=self.keys[:IMAGE_KEYS],
            database_url=self.db.url,
            gateway_common=lambda port: {
                "port": port,
                "database_url": self.db.url,
                "redis_url": self.redis.url,
                "redis_prefix": self.redis.prefix + "jobs:",
                "backend": self.backend,
                "local_ttl": a.local_ttl,
            },
            backend=self.backend,
            log=log,
        )
        self.jobs = scenario.run()
        machine = self.outcome.machine
        text = jobs_report.render(
            self.jobs,
            self.outcome_command(),
            report.now_utc(),
            f"{machine.get('nproc', '?')} cores, load average at start "
            f"{machine.get('load average at start', '?')}, at end "
            + " ".join(f"{v:.2f}" for v in os.getloadavg())
            + " (shared with other work)",
        )
        print()
        print(text)
        return text

    def fixed_rate_runs(
        self,
        into: dict[str, list[LoadResult]],
        rate: float,
        proxy: str,
        hop: str,
        gw: str,
        held: str,
    ) -> None:
        a = self.args
        log(f"fixed rate: {rate:.0f} requests/s for B1, B1r, G and Gn")
        for run in range(1, a.runs + 1):
            for name, base in (("B1", proxy), ("B1r", hop), ("G", gw), ("Gn", held)):
                if name == "G":
                    self.warm_keys(gw, 1)
                elif name == "Gn":
                    warm(held + PATH, self.keys, concurrency=a.connections)
                result = self.with_cpu(name, partial(self.python_load, name, base + PATH, rate))
                self.show(result, f"fixed-rate {rate:.0f}/s {name} run {run}/{a.runs}")
                into.setdefault(name, []).append(result)
                if name == "G":
                    self.wait_flushed()  # so the next run does not share the last flush

    def run_workers(self, upstream: str, upstream_pids: list[int], redis_pids: list[int]) -> None:
        a, o = self.args, self.outcome
        log("server.workers: 2 against a 2-process B1")
        proxy2, proxy2_pids = self.start_proxy(upstream, 2)
        gateway2, gw2 = self.start_gateway(upstream, 2, "gateway-2-workers")
        self.roles["B1x2"] = {"proxy or gateway": proxy2_pids, "upstream": upstream_pids}
        self.roles["Gx2"] = {
            "proxy or gateway": [gateway2.pid],
            "upstream": upstream_pids,
            "redis": redis_pids,
            **self.postgres_role(),
        }
        # A key is cached per process; each connection lands on one of them.
        statuses = warm(gw2 + PATH, self.keys, concurrency=a.connections, repeats=3)
        if set(statuses) != {200}:
            raise RuntimeError(f"warming the keys got statuses {dict(statuses)}")
        self.pg_busy_until = time.monotonic() + PG_IDLE_REPORT_S
        redis_total: RedisUsage | None = None
        pg_total: PostgresUsage | None = None
        for run in range(1, a.runs + 1):
            result = self.closed_loop("B1x2", proxy2)
            self.show(result, f"B1 x2 run {run}/{a.runs}")
            o.runs.setdefault("B1x2", []).append(result)
            result, r_usage, p_usage = self.measure_gateway("Gx2", gw2, 2)
            self.show(result, f"G workers=2 run {run}/{a.runs}")
            o.runs.setdefault("Gx2", []).append(result)
            redis_total = r_usage if redis_total is None else redis_total.add(r_usage)
            pg_total = p_usage if pg_total is None else pg_total.add(p_usage)
        o.workers_redis, o.workers_postgres = redis_total, pg_total
        o.workers_note = (
            "Each key was warmed 2-3 times over new connections before every G run, so that "
            "both worker processes are likely to hold it."
        )

    def profile(self, gateway: Child, base: str, output: Path) -> list[str]:
        """One extra G run under py-spy (not counted); the top functions."""
        spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if spy is None:
            self.outcome.notes.append("--profile: py-spy not found (pip install py-spy)")
            return []
        self.warm_keys(base, 1)
        argv = [spy, "record", "--pid", str(gateway.pid), "--duration", str(self.args.duration)]
        argv += ["--rate", "250", "--nonblocking", "--subprocesses", "--format", "raw"]
        argv += ["--output", str(output)]
        spy_child = self.children.start("py-spy", argv, self.workdir / "py-spy.log")
        time.sleep(1.0)
        result = self.closed_loop("G (profiled)", base)
        self.show(result)
        spy_child.process.wait(self.args.duration + 30)
        self.children.stop(spy_child)
        if not output.exists():
            self.outcome.notes.append(f"--profile: py-spy failed: {spy_child.log_tail(5)}")
            return []
        return summarise_profile(output.read_text())

    # -- reporting -----------------------------------------------------------------------

    def fill_settings(self) -> None:
        a, o = self.args, self.outcome
        pg_note = self.pg.why if self.pg else ""
        o.settings = {
            "date": report.now_utc(),
            "command": self.outcome_command(),
            "load_tool": (
                f"`{self.wrk_command}` (threads {a.threads})"
                if self.wrk_command
                else "bench.constant_rate (closed loop; wrk missing)"
            )
            + "; fixed-rate runs: bench.constant_rate (open loop, latency from each request's "
            "due time; wrk2 is not packaged for Debian)",
            "runs": a.runs,
            "duration": a.duration,
            "connections": a.connections,
            "keys": a.keys,
            "backend": self.backend,
            "redis": (
                "a private redis-server started for the run (INFO commandstats, read "
                "around each G run, counts only the gateway's commands; B1r uses it in its "
                "own runs)"
                if self.redis.private
                else f"{self.redis.url} (shared: counts include other clients' commands)"
            )
            + f", key prefix `{self.redis.prefix}`",
            "pg_note": pg_note,
            "prime_s": self.prime_s,
        }
        o.versions = {
            "Python": platform.python_version(),
            "servers (G and the bare proxies) run by": servers_description(),
            "aiohttp": aiohttp.__version__,
            "redis-py": redis.__version__,
            "asyncpg": asyncpg.__version__,
            "uvloop": getattr(uvloop, "__version__", "unknown"),
            "Redis": self.redis.version(),
            "Postgres": self.db.server_version(),
            "wrk": wrk_version(self.wrk) if self.wrk else "not installed",
            "gateway source": self.git_at_start
            + (
                ""
                if _git_state() == self.git_at_start
                else f" at the start; {_git_state()} at the end (the tree changed meanwhile)"
            ),
        }
        o.machine["load average at end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        from gateway.config import KeysConfig
        from gateway.keys.cache import TTL_JITTER

        jitter = f"less up to {TTL_JITTER:.0%} at random"
        ttl = a.local_ttl if a.local_ttl is not None else KeysConfig().local_ttl_seconds
        rps = o.median("G", "rps")
        if rps > 0 and o.keys:
            # Keys are used in turn: each every keys/rps seconds, refreshed at the first use
            # past the TTL.
            expected = 1 / (math.floor(ttl * rps / o.keys) + 1)
            o.notes.append(
                f"keys.local_ttl_seconds = {ttl:g}"
                + (" (--local-ttl)" if a.local_ttl is not None else " (the gateway's default)")
                + f": a process's copy of a key older than that ({jitter}, so keys loaded "
                "together go stale apart) is refreshed from Redis (one "
                "lookup.lua call, in the background) when the key is next used. With "
                f"{o.keys} keys used in turn at {rps:.0f} requests/s, each key comes back "
                f"every {o.keys / rps:.1f} s, so about {expected:.2f} refreshes per request "
                "are expected in the steady state."
            )
        redis_ttl = KeysConfig().redis_ttl_seconds
        o.notes.append(
            f"Keys' Redis entries live keys.redis_ttl_seconds ({redis_ttl:.0f} s by default) "
            f"({jitter}) from when they were read from Postgres, and a hit does not extend "
            "them: every key in use is read from Postgres again within "
            f"{redis_ttl * (1 - TTL_JITTER) / 60:.0f} to {redis_ttl / 60:.0f} minutes "
            f"({o.keys} keys: about {o.keys / redis_ttl:.1f} queries/s). Measured windows "
            "rarely include that, since all keys were loaded together; a warm-up that "
            "reached Postgres is waited out and repeated."
        )

    def outcome_command(self) -> str:
        argv = self.args.argv
        return f"{shlex.quote(sys.executable)} -m bench.run {shlex.join(argv)}".strip()

    def verdict(self, tiny: str | None, image: str | None, jobs: str | None = None) -> int:
        a, o = self.args, self.outcome
        groups = (*o.runs.values(), *o.fixed.values(), *o.fixed_low.values())
        all_runs = [r for rs in groups for r in rs]
        errors = [r for r in all_runs if not r.ok]
        image_runs = self.image.all_runs if self.image is not None else []
        image_errors = [r for r in image_runs if r.errors]
        if a.smoke:
            checks: dict[str, bool] = {}
            if tiny is not None:
                checks = {
                    "every configuration answered only 200s": not errors,
                    "Redis round trips per request 1.00 +/- 0.05 (request path)": o.redis
                    is not None
                    and abs(o.redis.round_trips_per_request - 1) <= 0.05,
                    "Postgres queries per request ~0": o.postgres is not None
                    and o.postgres.per_request <= SMOKE_PG_TOLERANCE,
                    "Gn held its usage back (every key's count still pending in Redis)": (
                        self.held_back
                    ),
                }
            if tiny is not None and self.cluster_outcome is not None:
                checks[cluster_scenario.TARGET] = cluster_scenario.target(self.cluster_outcome)[1]
            if image is not None:
                checks["image workload: every configuration measured, answers complete"] = bool(
                    image_runs
                ) and all(r.requests > 0 for r in image_runs)
                checks[
                    "image workload: no non-200, socket error or short answer"
                ] = not image_errors
            if jobs is not None and self.jobs is not None:
                checks["jobs: every submit answered 202, every job succeeded"] = (
                    not self.jobs.errors and bool(self.jobs.samples.get("webhook"))
                )
            for name, passed in checks.items():
                print(f"smoke: {'PASS' if passed else 'FAIL'}  {name}")
            return 0 if all(checks.values()) else 1
        output = Path(a.output)
        existing = output.read_text() if output.exists() else ""
        rest, old_jobs = jobs_report.split(existing)
        merged = image_report.merge(rest, tiny, image) if tiny or image else rest
        output.write_text(jobs_report.join(merged, jobs if jobs is not None else old_jobs))
        log(f"wrote {output}" + ("" if a.scenario == "all" else f" (its {a.scenario} section)"))
        if self.jobs is not None and self.jobs.errors:
            print(f"error: the jobs scenario saw {len(self.jobs.errors)} error(s)")
            return 1
        if errors or image_errors:
            print(
                f"error: {len(errors) + len(image_errors)} run(s) saw non-2xx responses, "
                "socket errors or short answers"
            )
            return 1
        failed = tiny is not None and not all(t.passed for t in report.targets(o))
        if tiny is not None and self.cluster_outcome is not None:
            passed = cluster_scenario.target(self.cluster_outcome)[1]
            print(f"{'PASS' if passed else 'FAIL'}  {cluster_scenario.TARGET}")
            failed |= not passed
        failed |= (
            image is not None
            and self.image is not None
            and not all(t.passed for t in image_report.targets(self.image))
        )
        if a.strict and failed:
            return 1
        return 0


def _git_state() -> str:
    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], capture_output=True, text=True, cwd=ROOT, check=False)
        return out.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "gateway", "pyproject.toml", "migrations")
    if not changed:
        return f"commit {head}"
    return f"commit {head} plus uncommitted changes to {len(changed.splitlines())} file(s)"


_FRAME_LINE = re.compile(r":\d+\)$")
#: Frames under which everything runs: they say nothing about where the time goes.
_ROOT_FRAMES = frozenset(
    {"<module>", "_run_module_as_main", "_run_code", "main", "run_app", "serve", "_serve"}
    | {"_run_worker", "run_until_complete", "run_forever", "_run_once", "_run", "run"}
)


def summarise_profile(collapsed: str, top: int = 15) -> list[str]:
    """Top functions by own and by total samples, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        # (--subprocesses puts a "process <pid>:<command line>" frame on top)
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            if frame.split(" (", 1)[0] not in _ROOT_FRAMES:
                total[frame] += count
    if not samples:
        return []
    out = [f"{samples} samples while busy; by own time:"]
    out += [f"  {n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["by total time (including callees):"]
    out += [f"  {n / samples:6.1%}  {f}" for f, n in total.most_common(top)]
    return out


def _short(frame: str) -> str:
    frame = _FRAME_LINE.sub(")", frame.strip())
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            tail = tail.split(marker, 1)[-1]
            frame = f"{head}({tail}"
    return frame


def image_settings(args: argparse.Namespace) -> ImageSettings:
    """The image workload's settings from the command line (``--smoke``: small and short,
    unless set explicitly)."""
    ns = tuple(sorted({int(v) for v in args.image_n.split(",") if v.strip()}))
    variants = tuple(v.strip() for v in args.image_variants.split(",") if v.strip())
    if not set(variants) <= {"b64", "url"}:
        raise ValueError(variants)
    values = {
        "delay_s": args.image_delay,
        "size_kib": args.image_size_kib,
        "connections": args.image_connections,
        "duration_s": args.image_duration,
    }
    if args.smoke:
        given = set(args.argv)
        for key, value in SMOKE_IMAGE.items():
            option = "--image-" + key.removesuffix("_s").replace("_", "-")
            if option not in given and not any(a.startswith(option + "=") for a in given):
                values[key] = value
    delay = float(values["delay_s"])
    warmup = args.image_warmup if args.image_warmup is not None else 2 * delay + 1
    if args.smoke and args.image_warmup is None:
        warmup = 2 * delay + 0.2
    limit = args.image_rss_limit_mib * 2**20 if args.image_rss_limit_mib else default_rss_limit()
    return ImageSettings(
        delay_s=delay,
        size_kib=int(values["size_kib"]),
        connections=int(values["connections"]),
        ns=ns,
        duration_s=float(values["duration_s"]),
        warmup_s=warmup,
        runs=args.runs,
        variants=variants,
        rss_limit=limit,
        store_dir=args.image_store_dir,
    )


@functools.cache
def servers_description() -> str:
    """Which Python runs the servers measured, and whether it has only the runtime
    dependencies (no ``cryptography``, which only the dev extra brings)."""
    python = server_python()
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('cryptography') is None)"],
        capture_output=True,
        text=True,
        check=False,
    )
    lean = probe.stdout.strip() == "True"
    what = "the runtime dependencies only" if lean else "the dev extra too (cryptography)"
    return f"`{python}`, {what}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--keys", type=int, default=10_000, help="API keys, all warm (10000)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="1 run of 2 s each, 200 keys, no file written; exit 1 unless all is well",
    )
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"), help="the report to write")
    parser.add_argument(
        "--local-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="set keys.local_ttl_seconds (default: the gateway's default)",
    )
    parser.add_argument(
        "--shared-redis",
        action="store_true",
        help="use REDIS_URL (with a private prefix) instead of a private redis-server",
    )
    parser.add_argument(
        "--credits",
        action="store_true",
        help="the keys' plan has monthly_credits: every admission checks and charges credits",
    )
    parser.add_argument(
        "--server-python",
        metavar="PATH",
        help="the Python that runs G and the bare proxies (make bench: a venv with the "
        "runtime dependencies only, as the Docker image has; default: this one)",
    )
    parser.add_argument("--profile", metavar="PATH", help="one extra G run under py-spy")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="tiny scenario: also run G on a private 3-primary Redis Cluster (Gc)",
    )
    parser.add_argument(
        "--scenario",
        choices=("all", "tiny", "image", "jobs"),
        default="all",
        help="tiny: the fast upstream; image: the slow upstream with megabyte answers;"
        " jobs: a generation as a job against the same one synchronously (all)",
    )
    jobs = parser.add_argument_group("the jobs scenario (--scenario jobs or all)")
    jobs.add_argument("--jobs-delay", type=float, default=0.5, help="upstream delay, s (0.5)")
    jobs.add_argument("--jobs-size-kib", type=int, default=64, help="KiB per image (64)")
    jobs.add_argument("--jobs-connections", type=int, default=8, help="clients (8)")
    jobs.add_argument("--jobs-duration", type=float, default=10.0, help="seconds per phase (10)")
    image = parser.add_argument_group("the image workload (--scenario image or all)")
    image.add_argument(
        "--image-delay", type=float, default=2.0, metavar="D", help="upstream delay, s (2)"
    )
    image.add_argument(
        "--image-size-kib", type=int, default=1024, metavar="S", help="KiB per image (1024)"
    )
    image.add_argument(
        "--image-connections", type=int, default=400, metavar="C", help="clients (400)"
    )
    image.add_argument(
        "--image-n", default="1,4", metavar="N[,N]", help="images per request, each in turn (1,4)"
    )
    image.add_argument(
        "--image-duration", type=float, default=15.0, help="seconds per measured window (15)"
    )
    image.add_argument(
        "--image-warmup",
        type=float,
        default=None,
        metavar="SECONDS",
        help="unmeasured seconds before each window (2 x D + 1)",
    )
    image.add_argument(
        "--image-variants",
        default="b64,url",
        metavar="V[,V]",
        help="b64 (b64_json answers) and/or url (the gateway downloads) (b64,url)",
    )
    image.add_argument(
        "--image-store-dir",
        default="",
        metavar="DIR",
        help="where Gu's file store goes (the bench's temporary directory; /dev/shm: no disk)",
    )
    image.add_argument(
        "--image-rss-limit-mib",
        type=int,
        default=None,
        metavar="MIB",
        help="stop a run whose serving processes pass this (half of MemAvailable, <= 8 GiB)",
    )
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/gateway")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.smoke:
        args.duration, args.runs, args.keys = 2, 1, 200
    if not (1 <= args.duration <= 120 and 1 <= args.runs <= 10):
        parser.error("--duration must be 1-120 s and --runs 1-10")
    if not (1 <= args.connections <= 1024 and 1 <= args.keys <= 100_000):
        parser.error("--connections must be 1-1024 and --keys 1-100000")
    if not 1 <= args.threads <= args.connections:
        parser.error("--threads must be 1 to --connections")
    try:
        settings = image_settings(args)
    except ValueError:
        parser.error("--image-n and --image-variants are comma-separated lists")
    problem = image_settings_valid(settings)
    if problem:
        parser.error(problem)

    if args.server_python:
        os.environ[SERVER_PYTHON_ENV] = args.server_python
    restore = raise_on_termination_signals()
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    children = Children()
    bench = Bench(args, workdir, children)
    status = 1
    try:
        status = bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        status = 130
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        for child in children.running():
            print(
                f"--- {child.name} log ({child.log_path}):\n{child.log_tail(15)}", file=sys.stderr
            )
        status = 1
    finally:
        log("cleaning up")
        children.stop_all()
        with contextlib.suppress(Exception):
            bench.db.drop()
        with contextlib.suppress(Exception):
            bench.redis.clean()
        shutil.rmtree(workdir, ignore_errors=True)
        restore()
    return status


if __name__ == "__main__":
    sys.exit(main())
