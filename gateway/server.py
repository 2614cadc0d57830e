"""Running the gateway: one process, or N worker processes sharing the port.

With ``server.workers`` > 1 a small supervisor forks the workers; each binds the same
port with SO_REUSEPORT, so the kernel spreads connections over them. SIGTERM (or
SIGINT) is passed on to every worker, which stops accepting, lets in-flight requests
finish (up to ``server.shutdown_timeout_seconds``), flushes usage and exits; the
supervisor exits 0 when all have. A worker that dies on its own is started again.
Prometheus metrics are shared through files in ``PROMETHEUS_MULTIPROC_DIR``, set up
before any worker imports the client library.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from gateway.config import Config

__all__ = ["resolve_workers", "serve"]

log = logging.getLogger(__name__)

_RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0)
_PR_SET_PDEATHSIG = 1


def resolve_workers(config: Config) -> int:
    return config.server.workers or os.cpu_count() or 1


def _use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        pass


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


def _run_worker(config: Config, host: str, port: int, dev: bool, reuse_port: bool) -> None:
    from aiohttp import web

    from gateway.app import create_app
    from gateway.http import protocol

    _use_uvloop()
    _keep_freed_memory()
    protocol.install()
    app = create_app(config, dev=dev)
    app.on_startup.append(_freeze_startup_objects)  # after the app's own start-up
    web.run_app(
        app,
        host=host,
        port=port,
        reuse_port=reuse_port,
        access_log=None,
        print=None,
        shutdown_timeout=config.server.shutdown_timeout_seconds,
        keepalive_timeout=config.server.keepalive_timeout_seconds,
        # Handed by aiohttp to every connection's GatewayRequestHandler.
        header_read_timeout=config.server.header_read_timeout_seconds,
        handle_signals=True,
    )


def _supervised_worker(config: Config, host: str, port: int, dev: bool, reuse_port: bool) -> None:
    # Forked with the supervisor's handlers: until the server installs its own, a
    # SIGTERM must stop this worker, not run the supervisor's handler in it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before the request took hold
        return
    _run_worker(config, host, port, dev, reuse_port)


def serve(config: Config, host: str, port: int, *, dev: bool = False) -> int:
    workers = resolve_workers(config)
    if workers == 1:
        _run_worker(config, host, port, dev, reuse_port=False)
        return 0

    owned_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        owned_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = owned_dir
    context = multiprocessing.get_context("fork")
    stopping = False

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_supervised_worker,
            args=(config, host, port, dev, True),
            name=f"gateway-worker-{index}",
        )
        process.start()
        return process

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    processes = [start(i) for i in range(workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts = [0] * workers
    try:
        while True:
            alive = False
            for i, process in enumerate(processes):
                if process.is_alive():
                    alive = True
                elif not stopping:
                    delay = _RESTART_BACKOFF[min(restarts[i], len(_RESTART_BACKOFF) - 1)]
                    log.error(
                        "worker %d exited with %s; starting it again in %.1fs",
                        i,
                        process.exitcode,
                        delay,
                    )
                    time.sleep(delay)
                    if stopping:  # SIGTERM came during the pause: start nothing new
                        continue
                    restarts[i] += 1
                    processes[i] = start(i)
                    alive = True
            if stopping and not alive:
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            process.join(timeout=1)
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)
    return 0
