"""The tiny scenario's G on a Redis Cluster (Gc): a private 3-primary cluster and its report.

``python -m bench.run --scenario tiny --redis-cluster`` starts three ``redis-server
--cluster-enabled yes`` nodes (no replicas: the bench measures the hot path, not
failover) on free ports below 55535 (each node's cluster bus listens 10000 above its
port), joins them with ``redis-cli --cluster create``, and runs one more gateway on it
(``redis.url: redis+cluster://...``). Its round trips per request are the ``EVALSHA``
calls summed over the primaries' ``INFO commandstats``, split by script exactly as for G
(:mod:`bench.counters`). The nodes are children of the run, stopped with the rest.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.counters import RedisUsage, redis_commandstats
from bench.procs import Child, Children
from bench.wrk import LoadResult

__all__ = ["BenchCluster", "ClusterOutcome", "render", "target"]

PRIMARIES = 3
#: Highest port a node may take (its cluster bus port, port + 10000, must be valid).
MAX_PORT = 55535
#: Gc's Redis key prefix, after the run's own (its counters apart from G's).
CLUSTER_PREFIX = "c:"
TARGET = "Gc: one Redis round trip per request (request path, 1.00 +/- 0.05)"


def _free_node_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    for _ in range(200):
        port = random.randrange(20000, MAX_PORT)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class BenchCluster:
    """Three cluster-enabled ``redis-server`` children and the cluster they make."""

    children: Children
    workdir: Path
    ports: list[int] = field(default_factory=list)
    nodes: list[Child] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The gateway's ``redis.url`` (every node; it finds the slot map itself)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    def start(self) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("--redis-cluster needs redis-server and redis-cli installed")
        for _ in range(PRIMARIES):
            port = _free_node_port()
            directory = self.workdir / f"cluster-{port}"
            directory.mkdir()
            argv = [binary, "--port", str(port), "--bind", "127.0.0.1"]
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            argv += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
            child = self.children.start(f"redis-cluster-{port}", argv, directory / "redis.log")
            self.ports.append(port)
            self.nodes.append(child)
            self._wait_ping(port, child)
        argv = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}{out.stderr}")
        self._wait_ok()

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=10)

    def _wait_ping(self, port: int, child: Child) -> None:
        with self._client(port) as client:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if not child.alive():
                        raise RuntimeError(f"redis-server exited:\n{child.log_tail()}") from None
                    time.sleep(0.025)
        raise RuntimeError(f"redis-server on {port} did not start")

    def _wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` and sees all three as primaries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for port in self.ports:
                with self._client(port) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    ok &= "cluster_state:ok" in text and f"cluster_size:{PRIMARIES}" in text
            if ok:
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not settle")

    def commandstats(self) -> dict[str, int]:
        """Calls per command, summed over the primaries."""
        total: dict[str, int] = {}
        for port in self.ports:
            with self._client(port) as client:
                for command, calls in redis_commandstats(client).items():
                    total[command] = total.get(command, 0) + calls
        return total

    def per_node_evalsha(self) -> list[int]:
        """EVALSHA calls so far on each primary (how evenly the slots share the load)."""
        counts = []
        for port in self.ports:
            with self._client(port) as client:
                stats = redis_commandstats(client)
            counts.append(stats.get("evalsha", 0) + stats.get("eval", 0))
        return counts


@dataclass
class ClusterOutcome:
    """Gc's runs next to G and B1 of the same bench run."""

    runs: list[LoadResult] = field(default_factory=list)
    usage: RedisUsage | None = None
    per_node: list[int] = field(default_factory=list)
    url: str = ""

    def add(self, result: LoadResult, usage: RedisUsage) -> None:
        self.runs.append(result)
        self.usage = usage if self.usage is None else self.usage.add(usage)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def target(outcome: ClusterOutcome) -> tuple[str, bool]:
    """Gc's round trips per request and whether it is one (within 5 %)."""
    if outcome.usage is None:
        return "not measured", False
    value = outcome.usage.round_trips_per_request
    return f"{value:.3f}", abs(value - 1) <= 0.05


def render(
    outcome: ClusterOutcome,
    runs: dict[str, list[LoadResult]],
    redis_per_request: float | None,
) -> str:
    """The report's section: B1, G and Gc side by side, the round trips, the target."""

    def median(name: str, attr: str) -> float:
        results = outcome.runs if name == "Gc" else runs.get(name, [])
        return _median([float(getattr(r, attr)) for r in results])

    b1 = median("B1", "rps")
    lines = [
        "## Redis Cluster (Gc)",
        "",
        f"Gc is G with `redis.url` on a private {PRIMARIES}-primary Redis Cluster "
        "(`redis-cli --cluster create`, no replicas) started for the run, measured with the "
        "same load after G and Gl in each round. Its Redis round trips are the EVALSHA "
        "calls summed over the primaries' `INFO commandstats`, less the usage flusher's.",
        "",
        "| configuration | RPS (median) | p50 ms | p99 ms | RPS of each run "
        "| Redis round trips per request | RPS / B1 |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    trips = {
        "B1": "0",
        "G": f"{redis_per_request:.3f}" if redis_per_request is not None else "?",
        "Gc": f"{outcome.usage.round_trips_per_request:.3f}" if outcome.usage else "?",
    }
    labels = {
        "B1": "B1 bare aiohttp proxy",
        "G": "G gateway (one Redis)",
        "Gc": f"Gc gateway ({PRIMARIES}-primary Redis Cluster)",
    }
    for name in ("B1", "G", "Gc"):
        results = outcome.runs if name == "Gc" else runs.get(name, [])
        if not results:
            continue
        rps = median(name, "rps")
        each = ", ".join(f"{r.rps:.0f}" for r in results)
        lines.append(
            f"| {labels[name]} | {rps:.0f} | {median(name, 'p50_ms'):.2f} | "
            f"{median(name, 'p99_ms'):.2f} | {each} | {trips[name]} | "
            f"{rps / b1 if b1 > 0 else float('nan'):.2f} |"
        )
    if outcome.usage is not None:
        u = outcome.usage
        per = u.per_request
        lines += [
            "",
            f"Gc, all runs: {u.requests} requests admitted; EVALSHA per request "
            f"{per(u.evalsha):.3f} in all (admissions {per(u.admissions):.3f}, key "
            f"refreshes {per(u.lookups):.3f}, flusher {per(u.flusher):.3f}); "
            "EVALSHA calls per primary over the whole run: "
            + ", ".join(str(n) for n in outcome.per_node)
            + ".",
        ]
        other = u.other_top_level
        if other:
            lines.append(
                "Other top-level commands (not on the request path): "
                + ", ".join(f"{k} {v}" for k, v in other.items())
                + "."
            )
    value, passed = target(outcome)
    lines += [
        "",
        "| target | measured | |",
        "|---|---:|---|",
        f"| {TARGET} | {value} | {'PASS' if passed else 'FAIL'} |",
    ]
    return "\n".join(lines) + "\n"
