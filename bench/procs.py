"""Child processes of the benchmark: started, waited for, and always stopped.

Every child gets ``PR_SET_PDEATHSIG`` (SIGTERM), so even a benchmark killed with
SIGKILL leaves no server behind; :class:`Children` stops the rest in reverse order on
any exit, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

__all__ = [
    "Child",
    "Children",
    "cpu_seconds",
    "free_port",
    "process_tree",
    "python_command",
    "raise_on_termination_signals",
    "rss_bytes",
    "server_command",
    "server_python",
    "tree_rss_bytes",
    "wait_http",
]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


#: The environment variable naming the Python of the servers measured; ``bench.run
#: --server-python`` sets it.
SERVER_PYTHON_ENV = "BENCH_SERVER_PYTHON"


def python_command(*args: str) -> list[str]:
    """The bench's own helpers (upstreams, load generators, the S3 server)."""
    return [sys.executable, *args]


def server_python() -> str:
    """The Python of the servers measured (the gateway and the bare proxies).

    ``make bench`` points it at a venv holding the package's runtime dependencies only,
    as the Docker image does: the dev extra brings more (``cryptography``, through moto),
    and a library that finds it imports it, which a deployed gateway never pays.
    """
    return os.environ.get(SERVER_PYTHON_ENV) or sys.executable


def server_command(*args: str) -> list[str]:
    return [server_python(), *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """One child process whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,  # the benchmark starts no threads
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; always reaps."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
        finally:
            self._log.close()


class Children:
    """The set of running children, stopped in reverse order of starting."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], log_path: Path, **kwargs: object) -> Child:
        child = Child(name, argv, log_path, **kwargs)  # type: ignore[arg-type]
        self._children.append(child)
        return child

    def stop(self, child: Child) -> None:
        if child in self._children:
            self._children.remove(child)
        child.stop()

    def running(self) -> list[Child]:
        return list(self._children)

    def stop_all(self) -> None:
        while self._children:
            child = self._children.pop()
            with contextlib.suppress(Exception):
                child.stop()


def wait_http(url: str, child: Child, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers 200 (or the child dies, or time runs out)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
                last = response.status
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout}s ({last})")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _parent_of(stat: str) -> int:
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (those alive now)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = _parent_of((entry / "stat").read_text())
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_rss_bytes(pid: int) -> int:
    """VmRSS of a process and all its descendants."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_bytes(member)
    return total


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes and their descendants."""
    total = 0.0
    for pid in pids:
        for member in process_tree(pid):
            try:
                fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def raise_on_termination_signals() -> Callable[[], None]:
    """Turn SIGTERM and SIGHUP into SystemExit and SIGINT into KeyboardInterrupt, so
    ``finally`` blocks clean up; returns a function that restores the old handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C is KeyboardInterrupt even where SIGINT came in ignored (a background job).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def environ_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
