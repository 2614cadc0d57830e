"""Running the gateway: one process, or N worker processes sharing the port.

Start-up, in every process: bind the port (a port in use fails before anything
connects), start the app (the Postgres pool, the backends...), then listen. Only when
every process serves does :func:`serve` print that the gateway is listening. A start-up
failure is one line on stderr (:func:`describe_failure`) and a non-zero exit status: 2
for a config error, 1 for anything else.

With ``server.workers`` > 1 a small supervisor forks the workers; each binds the same
port with SO_REUSEPORT, so the kernel spreads connections over them, and reports to the
supervisor once it serves or fails to start. If any worker fails to start, the
supervisor stops the others and exits with that worker's status. SIGTERM (or SIGINT) is
passed on to every worker, which stops accepting, lets in-flight requests finish (up to
``server.shutdown_timeout_seconds``), flushes usage and exits; the supervisor exits 0
when all have. SIGHUP is passed on too: every worker reads the config file again
(:mod:`gateway.reload`), and so does the supervisor, for the workers it starts later.
The process's id is in :func:`pid_file` while it runs (``gateway reload`` reads it). A
worker that dies later on its own is started again. Prometheus metrics are shared
through files in ``PROMETHEUS_MULTIPROC_DIR``, set up before any worker imports the
client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.config import Config, ConfigError
from gateway.startup import StartupError

__all__ = ["bind", "describe_failure", "pid_file", "resolve_workers", "serve"]

log = logging.getLogger(__name__)

_RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0)
#: What a worker tells its supervisor once it serves (else: the failure's line and status).
_SERVING = "serving"
_PR_SET_PDEATHSIG = 1


def resolve_workers(config: Config) -> int:
    return config.server.workers or os.cpu_count() or 1


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """The one line an operator reads for a start-up failure, and the exit status."""
    if isinstance(exc, ConfigError):
        return f"config error: {exc}", 2
    if isinstance(exc, StartupError):
        return f"error: {exc}", 1
    log.debug("start-up failed", exc_info=exc)
    return f"error: start-up failed: {type(exc).__name__}: {exc}", 1


def bind(host: str, port: int, *, reuse_port: bool) -> list[socket.socket]:
    """Sockets bound to every address of ``host`` (not listening yet).

    Raises :class:`StartupError` when the port is taken or the address unknown.
    """
    where = f"{_bracketed(host)}:{port}"
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {where}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio does: one socket per family
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(f"cannot listen on {where}: {reason}") from None
    return sockets


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _announce(host: str, port: int, workers: int) -> None:
    plural = "s" if workers > 1 else ""
    print(
        f"gateway listening on http://{_bracketed(host)}:{port} ({workers} worker{plural})",
        flush=True,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop where it is installed."""
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop


def _die_with_parent() -> None:
    """Linux: have the kernel send this worker SIGTERM if its supervisor dies (even by
    SIGKILL), so no worker is ever left serving on its own."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM suffices
        pass


#: glibc's ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def _keep_freed_memory() -> None:
    """glibc: serve blocks up to 32 MiB (image answers) from the heap and keep up to
    1 GiB of freed heap for reuse, instead of mapping fresh pages for each large block
    and giving them back when it is freed.

    A fresh page costs a fault when first touched: about 3 µs on the benchmark machine,
    so about 1 ms for each 1.4 MB image answer read, a third of what the gateway spends
    on such a request (BENCHMARKS.md, "Image relay"). The peak RSS is the same (the
    same blocks are live at the peak); memory is no longer given back between peaks.
    Left alone when the environment sets glibc's malloc itself, and where there is no
    glibc.
    """
    if any(name in os.environ for name in _MALLOC_ENV):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, macOS): its own policy stays
        pass


async def _freeze_startup_objects(app: object) -> None:
    """Keep what start-up made (modules, pools, the app) out of the cyclic collector's
    full passes, which otherwise walk all of it: some 40 ms with the gateway loaded, a
    stall that every request waiting then shares. It lives as long as the process."""
    gc.collect()
    gc.freeze()


def _run_worker(
    config: Config,
    host: str,
    port: int,
    *,
    dev: bool,
    reuse_port: bool,
    on_ready: Callable[[], None],
    public_api: bool = True,
    config_path: Path | None = None,
) -> None:
    """Bind, start the app, call ``on_ready``, and serve until SIGTERM or SIGINT.
    ``public_api`` False: a job worker (health and metrics only).

    Raises what start-up raised (:class:`StartupError`, :class:`ConfigError`...), after
    closing whatever it had opened.
    """
    from gateway.app import create_app
    from gateway.http import protocol

    new_loop = _loop_factory()
    _keep_freed_memory()
    protocol.install()
    sockets = bind(host, port, reuse_port=reuse_port)
    try:
        metrics_port = config.server.metrics_port
        metrics_sockets = bind(host, metrics_port, reuse_port=reuse_port) if metrics_port else []
        sockets += metrics_sockets
        app = create_app(config, dev=dev, public_api=public_api, config_path=config_path)
        app.on_startup.append(_freeze_startup_objects)  # after the app's own start-up
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(_serve_app(app, sockets, config, on_ready, metrics_sockets))
    finally:
        for sock in sockets:
            sock.close()


async def _serve_app(
    app: Any,
    sockets: list[socket.socket],
    config: Config,
    on_ready: Callable[[], None],
    metrics_sockets: list[socket.socket],
) -> None:
    """Serve ``app`` on ``sockets`` (``/metrics`` alone on ``metrics_sockets``, which
    ``sockets`` includes) until SIGTERM or SIGINT."""
    from aiohttp import web

    from gateway.http.routes import metrics_app
    from gateway.reload import RELOADER
    from gateway.services import SERVICES

    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None
    serving = interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        if serving:
            stop.set()  # a graceful stop: in-flight requests finish
        elif not interrupted:  # start-up may wait long (a Postgres that does not answer)
            interrupted = True
            main.cancel()

    reloads: set[asyncio.Task[bool]] = set()

    def on_reload() -> None:
        if not serving:
            log.warning("SIGHUP during start-up: ignored (the config is being read now)")
            return
        task = asyncio.create_task(app[RELOADER].reload(), name="config-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=config.server.shutdown_timeout_seconds,
        keepalive_timeout=config.server.keepalive_timeout_seconds,
        # Handed by aiohttp to every connection's GatewayRequestHandler.
        header_read_timeout=config.server.header_read_timeout_seconds,
    )
    metrics_runner = None
    try:
        await runner.setup()  # the app's start-up: pools opened, backends started
        if metrics_sockets:  # server.metrics_port
            metrics_runner = web.AppRunner(metrics_app(app[SERVICES]), access_log=None)
            await metrics_runner.setup()
            for sock in metrics_sockets:
                await web.SockSite(metrics_runner, sock).start()
        for sock in sockets:
            if sock not in metrics_sockets:
                await web.SockSite(runner, sock).start()  # listens from here on
        serving = True
        on_ready()
        await stop.wait()
    except asyncio.CancelledError:
        if not interrupted:
            raise
        main.uncancel()  # handled: what follows may wait again
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()  # stop accepting, let requests finish, final flush


def pid_file(port: int) -> Path:
    """Where the gateway serving ``port`` on this host keeps its process id."""
    return Path(tempfile.gettempdir()) / f"image-gateway-{port}.pid"


def serve(
    config: Config,
    host: str,
    port: int,
    *,
    dev: bool = False,
    public_api: bool = True,
    config_path: Path | None = None,
) -> int:
    """Run the gateway until SIGTERM or SIGINT; the exit status. ``public_api`` False:
    only work jobs (``gateway worker``), answering health and metrics only.
    ``config_path``: the file SIGHUP reads again.

    Prints ``gateway listening on ...`` once every process serves, or one line on
    stderr if start-up fails.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server handles it
    pid_path = pid_file(port)
    with contextlib.suppress(OSError):
        pid_path.write_text(f"{os.getpid()}\n")
    try:
        return _serve(config, host, port, dev, public_api, config_path)
    finally:
        with contextlib.suppress(OSError):
            if pid_path.read_text().strip() == str(os.getpid()):
                pid_path.unlink()


def _serve(
    config: Config,
    host: str,
    port: int,
    dev: bool,
    public_api: bool,
    config_path: Path | None,
) -> int:
    workers = resolve_workers(config)
    try:
        if port == config.server.metrics_port:  # --port may say so
            raise StartupError(f"server.metrics_port: must differ from the port ({port})")
        if workers == 1:
            _run_worker(
                config,
                host,
                port,
                dev=dev,
                reuse_port=False,
                on_ready=lambda: _announce(host, port, 1),
                public_api=public_api,
                config_path=config_path,
            )
            return 0
        # The workers share the ports; first make sure nobody else holds them.
        for shared in (port, config.server.metrics_port):
            for sock in bind(host, shared, reuse_port=False) if shared else []:
                sock.close()
    except Exception as exc:
        line, status = describe_failure(exc)
        print(line, file=sys.stderr, flush=True)
        return status
    return _Supervisor(config, host, port, dev, workers, public_api, config_path).run()


def _supervised_worker(
    config: Config,
    host: str,
    port: int,
    dev: bool,
    report: Connection,
    public_api: bool,
    config_path: Path | None,
) -> None:
    # Forked with the supervisor's handlers: until the server installs its own, a
    # SIGTERM must stop this worker, not run the supervisor's handler in it (and a
    # SIGHUP must not stop it: it reads the config at start anyway).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before the request took hold
        return
    try:
        _run_worker(
            config,
            host,
            port,
            dev=dev,
            reuse_port=True,
            on_ready=lambda: report.send(_SERVING),
            public_api=public_api,
            config_path=config_path,
        )
    except Exception as exc:
        line, status = describe_failure(exc)
        with contextlib.suppress(OSError):
            report.send((line, status))
        sys.exit(status)


@dataclass
class _Worker:
    process: BaseProcess
    #: Where the worker says it serves (:data:`_SERVING`) or could not start (line,
    #: status); closed once read.
    reports: Connection | None


class _Supervisor:
    def __init__(
        self,
        config: Config,
        host: str,
        port: int,
        dev: bool,
        count: int,
        public_api: bool,
        config_path: Path | None,
    ) -> None:
        self.config, self.host, self.port, self.dev = config, host, port, dev
        self.public_api = public_api
        self.config_path = config_path
        self.count = count
        self.context = multiprocessing.get_context("fork")
        self.stopping = False
        self.workers: list[_Worker] = []

    def run(self) -> int:
        owned_dir = None
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            owned_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = owned_dir
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        try:
            self.workers = [self._start(i) for i in range(self.count)]
            failure = self._wait_until_serving()
            if failure is not None:
                self._stop_all()
                self._wait_for_exit()
                print(failure[0], file=sys.stderr, flush=True)
                return failure[1]
            if not self.stopping:
                _announce(self.host, self.port, self.count)
            self._watch()
        finally:
            for worker in self.workers:
                worker.process.join(timeout=1)
            if owned_dir is not None:
                shutil.rmtree(owned_dir, ignore_errors=True)
        return 0

    def _start(self, index: int) -> _Worker:
        reports, report = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_supervised_worker,
            args=(
                self.config,
                self.host,
                self.port,
                self.dev,
                report,
                self.public_api,
                self.config_path,
            ),
            name=f"gateway-worker-{index}",
        )
        process.start()
        report.close()  # the worker holds the other end: EOF here if it dies
        return _Worker(process, reports)

    def _reload(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGHUP: every worker reads the config again (and logs what it did); so does
        the supervisor, so that a worker it starts later runs the same config."""
        for worker in self.workers:
            process = worker.process
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)
        if self.config_path is not None:
            from gateway.reload import read_again

            with contextlib.suppress(Exception):  # refused: every worker logs why
                self.config = read_again(self.config, self.config_path, dev=self.dev).config

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self._stop_all()

    def _stop_all(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def _read_report(self, worker: _Worker) -> str | tuple[str, int] | None:
        """The worker's report, if one came."""
        if worker.reports is None or not worker.reports.poll():
            return None
        try:
            message: str | tuple[str, int] = worker.reports.recv()
        except (EOFError, OSError):  # it exited without a word
            worker.process.join(timeout=5)
            code = worker.process.exitcode
            if code is not None and code < 0:
                how = f"was killed by {signal.Signals(-code).name}"
            else:
                how = f"exited with status {code}"
            message = (f"error: a worker {how} during start-up", 1)
        worker.reports.close()
        worker.reports = None
        return message

    def _wait_until_serving(self) -> tuple[str, int] | None:
        """Until every worker serves: ``None``; the first failure's (line, status)."""
        starting = set(range(self.count))
        while starting and not self.stopping:
            waitables = [self.workers[i].reports for i in starting]
            wait([w for w in waitables if w is not None], timeout=0.2)
            for i in sorted(starting):
                report = self._read_report(self.workers[i])
                if report == _SERVING:
                    starting.discard(i)
                elif isinstance(report, tuple) and not self.stopping:  # else: told to stop
                    return report
        return None

    def _wait_for_exit(self) -> None:
        # Requests drain and running jobs get their grace at the same time, from SIGTERM.
        config = self.config
        grace = max(config.server.shutdown_timeout_seconds, config.jobs.shutdown_grace_seconds)
        deadline = time.monotonic() + grace + 5
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()

    def _watch(self) -> None:
        """Start again any worker that dies, until SIGTERM; then wait for them all."""
        restarts = [0] * self.count
        while True:
            alive = False
            for i, worker in enumerate(self.workers):
                report = self._read_report(worker)
                if isinstance(report, tuple) and not self.stopping:
                    log.error("worker %d could not start: %s", i, report[0])
                if worker.process.is_alive():
                    alive = True
                elif not self.stopping:
                    delay = _RESTART_BACKOFF[min(restarts[i], len(_RESTART_BACKOFF) - 1)]
                    log.error(
                        "worker %d exited with %s; starting it again in %.1fs",
                        i,
                        worker.process.exitcode,
                        delay,
                    )
                    time.sleep(delay)
                    if self.stopping:  # SIGTERM came during the pause: start nothing new
                        continue
                    restarts[i] += 1
                    self.workers[i] = self._start(i)
                    alive = True
            if self.stopping and not alive:
                break
            time.sleep(0.2)
