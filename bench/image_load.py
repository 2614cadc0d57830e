"""The image workload's load generator: C clients in closed loop, measured in the steady state.

Each of ``--connections`` keep-alive connections sends a request, reads the whole answer
and sends the next. Three things set it apart from wrk, which the fast-upstream
scenario uses:

* **Staggered starts.** Connection ``i`` sends its first request ``i / C`` of
  ``--stagger`` seconds (the upstream's delay) after the first, so requests are spread
  over the delay as independent clients' would be. Started together, all C answers
  would arrive together, every ``D`` seconds, and the peak memory measured would be
  that of C bodies in transit at once, an artefact of the start.
* **A warm-up, then a window.** Only answers completed within the measured window count
  (``--duration`` long); it opens ``--warmup`` seconds after the start, or later, once
  every client has had its first answer: a server slower than the warm-up assumed is
  still building its queue until then. wrk counts from the
  start, when for ``D`` seconds nothing can complete: its rate is short by about
  ``latency / duration``, more for the slower configuration (some 3 % of a 0.95 ratio
  at D = 2 s, 15 s). And it leaves out answers slower than its ``--timeout``.
* **Bodies are counted, not kept.** The answer is parsed by httptools (llhttp: framing
  by Content-Length or chunked) straight from uvloop's reads of up to 256 KiB; no body
  is copied or held. wrk reads 8 KiB at a time: against the upstream alone (400
  connections, 1 MiB images) it took 0.46 ms of CPU per MB, this 0.29 to 0.38.

Requests are ``POST`` of ``--body`` with ``Authorization: Bearer <key>``, keys taken in
turn from ``--keys-file``. Prints one JSON object: the window's completions, their
latency percentiles (from when each request was sent), statuses, errors, response bytes
and the generator's own CPU time.

    python -m bench.image_load --url http://127.0.0.1:8080/v1/images/generations \\
        --keys-file keys.txt --body '{"prompt": "bench", "n": 1}' --connections 400 \\
        --stagger 2 --warmup 5 --duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httptools

from bench.constant_rate import percentile
from bench.procs import cpu_seconds

__all__ = ["run"]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Load:
    """The shared state of one run: the window and what was seen in it."""

    def __init__(
        self, requests: list[bytes], host: str, port: int, timeout: float, min_bytes: int
    ) -> None:
        self.requests = requests
        self.min_bytes = min_bytes
        self.host, self.port = host, port
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
        self.window_start = float("inf")
        self.window_end = float("inf")
        self.sending = True
        self.sent = 0
        self.latencies: list[float] = []
        self.sizes: list[int] = []
        self.short = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.connections: set[_Connection] = set()
        #: The clients (by number) that have had an answer, and whether all have.
        self.answered: set[int] = set()
        self.clients = 0
        self.all_answered = asyncio.Event()

    def in_window(self, now: float) -> bool:
        return self.window_start <= now < self.window_end

    def next_request(self) -> bytes:
        self.sent += 1
        return self.requests[self.sent % len(self.requests)]

    def completed(self, client: int, status: int, size: int, started: float) -> None:
        now = self.clock()
        if client not in self.answered:
            self.answered.add(client)
            if len(self.answered) == self.clients:
                self.all_answered.set()
        if self.in_window(now):
            self.statuses[status] += 1
            self.latencies.append(now - started)
            self.sizes.append(size)
            if status == 200 and size < self.min_bytes:
                self.short += 1

    def failed(self, what: str) -> None:
        if self.in_window(self.clock()):
            self.errors[what] += 1

    def open(self, client: int, delay: float = 0.0) -> None:
        """A connection for ``client``, sending its first request after ``delay`` seconds."""
        self.loop.create_task(self._open(client, delay))

    async def _open(self, client: int, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        while self.sending:
            try:
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self, client), self.host, self.port
                )
            except OSError:
                self.failed("connect")
                await asyncio.sleep(0.1)
                continue
            connection.send()
            return


class _Connection(asyncio.Protocol):
    """One client: a request at a time; an answer is counted by its bytes, not kept."""

    def __init__(self, load: _Load, client: int) -> None:
        self.load = load
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.received = 0
        self.started = 0.0
        self.busy = False
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.load.connections.add(self)

    def send(self) -> None:
        assert self.transport is not None
        self.received, self.busy, self.done = 0, True, False
        self.started = self.load.clock()
        self.transport.write(self.load.next_request())

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.load.failed("malformed response")
            self._drop()
            return
        if self.done:
            self.busy = False
            self.load.completed(
                self.client, self.parser.get_status_code(), self.received, self.started
            )
            if not self.load.sending:
                self._drop()
            elif self.parser.should_keep_alive():
                self.send()
            else:
                self._drop()
                self.load.open(self.client)

    def on_message_complete(self) -> None:
        self.done = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.connections.discard(self)
        if self.busy and self.load.sending:
            self.busy = False
            self.load.failed("connection lost")
            self.load.open(self.client)

    def _drop(self) -> None:
        self.busy = False
        if self.transport is not None:
            self.transport.close()


def _build_requests(url: str, keys: list[str], body: bytes) -> list[bytes]:
    parts = urllib.parse.urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    return [(head + f"Authorization: Bearer {key}\r\n\r\n").encode() + body for key in keys or [""]]


async def run(
    url: str,
    keys: list[str],
    *,
    body: bytes,
    connections: int,
    stagger: float,
    warmup: float,
    duration: float,
    timeout: float,
    min_bytes: int = 0,
    cpu_roles: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Run the load; a summary with latencies in milliseconds. ``cpu_roles``: processes
    whose CPU time (theirs and their descendants') over the window is reported by name;
    ``min_bytes``: a 200 answer shorter than that (headers included) counts as short."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    load = _Load(_build_requests(url, keys, body), host, port, timeout, min_bytes)
    roles = cpu_roles or {}
    load.clients = connections
    start = load.clock()
    for i in range(connections):
        load.open(i, stagger * i / connections)
    await asyncio.sleep(warmup)
    # and until every client has had its first answer: a server slower than the warm-up
    # assumed is still filling its queue until then
    warmed = True
    try:
        await asyncio.wait_for(load.all_answered.wait(), timeout)
    except TimeoutError:
        warmed = False
    load.window_start = load.clock()
    load.window_end = load.window_start + duration
    cpu_before = _cpu_seconds()
    roles_before = {role: cpu_seconds(pids) for role, pids in roles.items()}
    await asyncio.sleep(max(0.0, load.window_end - load.clock()))
    cpu = _cpu_seconds() - cpu_before
    roles_cpu = {role: cpu_seconds(pids) - roles_before[role] for role, pids in roles.items()}
    end = load.clock()
    load.sending = False
    # Requests still waiting at the end of the window after ``timeout`` seconds: stuck.
    stuck = sum(1 for c in load.connections if c.busy and end - c.started > timeout)
    if stuck:
        load.errors["timeout"] += stuck
    for connection in list(load.connections):
        connection._drop()
    latencies = sorted(load.latencies)
    requests = len(latencies)
    received = sum(load.sizes)
    return {
        "requests": requests,
        "duration_s": duration,
        "rps": requests / duration,
        "bytes": received,
        "mb_per_s": received / duration / 1e6,
        "min_response_bytes": min(load.sizes) if load.sizes else 0,
        "short_answers": load.short,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] * 1000) if latencies else 0.0,
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "errors": dict(load.errors),
        "generator_cpu_s": cpu,
        "cpu_s": roles_cpu,
        "connections": connections,
        #: The warm-up as it was: ``warmup`` or more, until every client had an answer.
        "warmup_s": load.window_start - start,
        "warmed_up": warmed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys-file", type=Path, help="API keys, one a line (sent in turn)")
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--stagger", type=float, default=2.0, help="seconds over which to start")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--duration", type=float, default=15.0, help="the window, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="a request stuck this long")
    parser.add_argument(
        "--min-bytes", type=int, default=0, help="a 200 answer shorter than this is short"
    )
    parser.add_argument(
        "--cpu",
        action="append",
        default=[],
        metavar="ROLE=PID[,PID]",
        help="report these processes' CPU time over the window (repeatable)",
    )
    args = parser.parse_args()
    roles = {}
    for item in args.cpu:
        role, _, pids = item.partition("=")
        roles[role] = [int(p) for p in pids.split(",") if p]
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 600:
        parser.error("--duration must be in (0, 600] and --warmup in [0, 600]")
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("--url must be on the loopback interface")
    keys = args.keys_file.read_text().split() if args.keys_file else []
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    summary = asyncio.run(
        run(
            args.url,
            keys,
            body=args.body.encode(),
            connections=args.connections,
            stagger=args.stagger,
            warmup=args.warmup,
            duration=args.duration,
            timeout=args.timeout,
            min_bytes=args.min_bytes,
            cpu_roles=roles,
        )
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
