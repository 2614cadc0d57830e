"""A private Redis Cluster for tests: three primaries and three replicas.

Started from the installed ``redis-server`` and ``redis-cli`` (``scripts/services.sh``
installs them), on free ports, in a temporary directory, and torn down after.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

__all__ = ["LocalCluster"]

#: How long a primary may be unreachable before its replica takes over (ms).
NODE_TIMEOUT_MS = 1000


@dataclass
class LocalCluster:
    """Six ``redis-server --cluster-enabled yes`` and the cluster they make."""

    directory: Path
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The gateway's ``redis.url`` for this cluster (two of its nodes; it finds the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def start(self, nodes: int = 6) -> None:
        _ensure_installed()
        self.ports = [_free_node_port() for _ in range(nodes)]
        for port in self.ports:
            self._start_node(port)
        self.cli(
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        )
        self.wait_until_ok()

    def _start_node(self, port: int) -> None:
        directory = self.directory / str(port)
        directory.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    assert self.processes[port].poll() is None, "redis-server exited"
                    time.sleep(0.025)
        finally:
            client.close()

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2)

    def live_ports(self) -> list[int]:
        return [port for port, p in self.processes.items() if p.poll() is None]

    def wait_until_ok(self, *, without: int | None = None) -> None:
        """Until every live node says the cluster is ok and agrees on who owns each slot
        (and, given ``without``, that node owns none: its replica took over)."""
        for _ in range(800):
            views = []
            for port in self.live_ports():
                client = self.node(port)
                try:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    views.append(
                        (
                            "cluster_state:ok" in info,
                            _owners(client.execute_command("CLUSTER", "SLOTS")),
                        )
                    )
                except redis.RedisError:
                    views.append((False, {}))
                finally:
                    client.close()
            if (
                all(ok for ok, _ in views)
                and len({str(v) for _, v in views}) == 1
                and all(owner != without for _, owners in views for _, _, owner in owners)
            ):
                return
            time.sleep(0.05)
        raise AssertionError("the Redis Cluster did not settle")

    def primary_of(self, key: str) -> int:
        """The port of the primary that owns ``key``'s slot."""
        client = self.node(self.live_ports()[0])
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            client.close()
        raise AssertionError(f"no node owns {key}")

    def primaries(self) -> list[int]:
        """The ports of the primaries that own slots."""
        client = self.node(self.live_ports()[0])
        try:
            slots = client.execute_command("CLUSTER", "SLOTS")
        finally:
            client.close()
        return sorted({port for _, _, port in _owners(slots)})

    def replica_of(self, primary: int) -> int:
        client = self.node(primary)
        try:
            node_id = client.execute_command("CLUSTER", "MYID").decode()
            for line in client.execute_command("CLUSTER", "REPLICAS", node_id):
                return int(line.decode().split()[1].split("@")[0].rsplit(":", 1)[1])
        finally:
            client.close()
        raise AssertionError(f"{primary} has no replica")

    def node_id(self, port: int) -> str:
        client = self.node(port)
        try:
            return str(client.execute_command("CLUSTER", "MYID").decode())
        finally:
            client.close()

    def slots_of(self, port: int) -> list[int]:
        """The slots the primary at ``port`` owns, in order."""
        client = self.node(self.live_ports()[0])
        try:
            slots = client.execute_command("CLUSTER", "SLOTS")
        finally:
            client.close()
        return [
            slot
            for start, end, owner in _owners(slots)
            if owner == port
            for slot in range(start, end + 1)
        ]

    def wait_replicated(self, primary: int) -> None:
        """Until the primary's replicas have every write it took."""
        client = self.node(primary)
        try:
            assert int(client.execute_command("WAIT", 1, 5000)) >= 1
        finally:
            client.close()

    def reshard(self, source: int, target: int, slots: int) -> None:
        """``redis-cli --cluster reshard``: the first ``slots`` of ``source`` to ``target``;
        returns once every node knows."""
        self.cli(
            "--cluster",
            "reshard",
            f"127.0.0.1:{source}",
            "--cluster-from",
            self.node_id(source),
            "--cluster-to",
            self.node_id(target),
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
        )
        self.wait_until_ok()

    def restart(self, port: int) -> None:
        """Start a killed node again (it rejoins, as a replica of who took over)."""
        self._start_node(port)
        self.wait_until_ok()

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(10)
        self.processes.clear()


def _owners(slots: list[list[object]]) -> list[tuple[int, int, int]]:
    """Who owns which slots, as one node sees it (for comparing views)."""
    return sorted((int(start), int(end), int(primary[1])) for start, end, primary, *_ in slots)


def _ensure_installed() -> None:
    """``redis-server`` and ``redis-cli``, installed as ``scripts/services.sh`` installs
    them when missing: with apt-get, as root, unless ``GATEWAY_AUTO_INSTALL=0``."""
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing and os.geteuid() == 0 and os.environ.get("GATEWAY_AUTO_INSTALL", "1") != "0":
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            subprocess.run(argv, env=env, check=False, capture_output=True, timeout=600)
        missing = [b for b in missing if shutil.which(b) is None]
    assert not missing, f"{', '.join(missing)} needed: apt-get install redis-server"


def _free_node_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    for _ in range(100):
        port = random.randrange(20000, 40000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")
