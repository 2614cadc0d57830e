"""Serving a stored image: the gateway's file route against aiohttp's own static handler.

One 1 MiB image is stored in a temporary ``file://`` store; then, each in a process of
its own, on the same event loop (uvloop, as the gateway serves, or asyncio's own, where
``sendfile`` works), these serve it to ``wrk -t1 -c32 --latency`` in interleaved runs:

- ``static``: ``web.static`` (``FileResponse``) on the store's directory;
- ``files``: the gateway's ``GET /v1/files/{id}?expires=&signature=`` (the error
  middleware, link verification, local files sent as in ``FileResponse``);
- ``files-obstore``: the same route reading the file through obstore's local store.

    python -m bench.files [--duration 10] [--runs 3] [--connections 32] [--loop both]
                          [--together]

prints a table of requests per second (medians), each route's ratio to ``static`` (of
the medians, and the median of the run-by-run ratios), and the server's CPU time per
request (user + system, worker threads included: on a shared
machine the steadier of the two).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import Children, cpu_seconds, free_port, python_command, wait_http
from bench.wrk import ensure_wrk

__all__ = ["main"]

SECRET = "bench-files-signing-secret-0123456789abcdef"  # noqa: S105 - a throwaway
SIZE = 1024 * 1024
KINDS = ("static", "files", "files-obstore")


def serve(kind: str, directory: Path, port: int, loop: str) -> None:
    """Run one server until killed (the child process's job)."""
    from aiohttp import web

    from gateway.http.files import add_file_routes
    from gateway.http.middlewares import request_context_middleware
    from gateway.logs import AccessLog
    from gateway.metrics import Metrics
    from gateway.storage import STORAGE, StorageConfig, open_storage

    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def make() -> web.Application:
        if kind == "static":
            app = web.Application()
            app.router.add_static("/static", directory)
        else:
            app = web.Application(
                middlewares=[request_context_middleware(Metrics(), AccessLog(), key_prefix="nb_")]
            )
            config = StorageConfig(url=f"file://{directory}", signing_secrets=(SECRET,))
            app[STORAGE] = await open_storage(config, sendfile=kind == "files")
            add_file_routes(app)
        app.router.add_get("/ready", lambda _: web.Response(text="ok"))  # type: ignore[arg-type, return-value]
        return app

    web.run_app(make(), host="127.0.0.1", port=port, access_log=None, print=None)


def store_image(directory: Path) -> tuple[str, str]:
    """Store a random 1 MiB image; its id and a link to it valid for a day."""
    from gateway.storage import StorageConfig, open_storage

    async def put() -> tuple[str, str]:
        config = StorageConfig(
            url=f"file://{directory}", signing_secrets=(SECRET,), url_ttl_seconds=86400
        )
        storage = await open_storage(config)
        info = await storage.store.put(os.urandom(SIZE), "image/png")
        await storage.store.close()
        return info.file_id, storage.links.sign_url(info.file_id, time.time(), "")

    return asyncio.run(put())


def start_wrk(wrk: str, url: str, duration: int, connections: int) -> subprocess.Popen[str]:
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def wrk_result(process: subprocess.Popen[str], url: str) -> tuple[float, int]:
    """Requests per second and requests answered, once ``process`` ends."""
    output, _ = process.communicate()
    if process.returncode != 0 or "Non-2xx" in output:
        raise RuntimeError(f"wrk failed on {url}:\n{output}")
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    count = re.search(r"([0-9]+) requests in", output)
    if rate is None or count is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{output}")
    return float(rate.group(1)), int(count.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loop", choices=("uvloop", "asyncio", "both"), default="both")
    parser.add_argument(
        "--together", action="store_true", help="load every route at once in each run"
    )
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.dir, args.port, args.loop)
        return 0

    wrk, hint = ensure_wrk()
    if wrk is None:
        print(hint, file=sys.stderr)
        return 2
    loops = ("uvloop", "asyncio") if args.loop == "both" else (args.loop,)
    children = Children()
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        directory = Path(tmp) / "images"
        file_id, link = store_image(directory)
        urls = {"static": f"/static/{file_id}", "files": link, "files-obstore": link}
        results: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        try:
            for loop in loops:
                ports, pids = {}, {}
                for kind in KINDS:
                    port = ports[kind] = free_port()
                    child = children.start(
                        f"{kind}-{loop}",
                        python_command(
                            "-m",
                            "bench.files",
                            "--serve",
                            kind,
                            "--dir",
                            str(directory),
                            "--port",
                            str(port),
                            "--loop",
                            loop,
                        ),
                        Path(tmp) / f"{kind}-{loop}.log",
                    )
                    wait_http(f"http://127.0.0.1:{port}/ready", child)
                    pids[kind] = child.pid
                # Interleaved, so drift hits every route alike; --together loads all
                # routes at once, so each meets the same contention.
                batches = [KINDS] if args.together else [(kind,) for kind in KINDS]
                for _ in range(args.runs):
                    for batch in batches:
                        before = {kind: cpu_seconds([pids[kind]]) for kind in batch}
                        urls_now = {k: f"http://127.0.0.1:{ports[k]}{urls[k]}" for k in batch}
                        running = {
                            k: start_wrk(wrk, urls_now[k], args.duration, args.connections)
                            for k in batch
                        }
                        for kind, process in running.items():
                            rps, count = wrk_result(process, urls_now[kind])
                            used = cpu_seconds([pids[kind]]) - before[kind]
                            used_us = used / max(count, 1) * 1e6
                            results.setdefault((loop, kind), []).append(rps)
                            cpu.setdefault((loop, kind), []).append(used_us)
                            print(
                                f"  {loop:8} {kind:14} {rps:9.1f} req/s {used_us:7.0f} us CPU/req",
                                flush=True,
                            )
                children.stop_all()
        finally:
            children.stop_all()

    command = (
        f"python -m bench.files --duration {args.duration} --runs {args.runs} "
        f"--connections {args.connections} --loop {args.loop}"
        + (" --together" if args.together else "")
    )
    print(f"\n`{command}` (wrk -t1 -c{args.connections}, {SIZE} byte image, medians)\n")
    print("| loop | route | req/s | vs static | run by run vs static | server CPU per request |")
    print("|---|---|---|---|---|---|")
    for loop in loops:
        static = statistics.median(results[(loop, "static")])
        for kind in KINDS:
            rps = statistics.median(results[(loop, kind)])
            used = statistics.median(cpu[(loop, kind)])
            paired = statistics.median(
                a / b for a, b in zip(results[(loop, kind)], results[(loop, "static")], strict=True)
            )
            print(
                f"| {loop} | {kind} | {rps:.1f} | {rps / static:.2f} | {paired:.2f} "
                f"| {used:.0f} us |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
