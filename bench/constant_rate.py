"""A small async load generator: a fixed request rate (open loop), or as fast as it can.

wrk2 is not packaged for Debian, so the fixed-rate latency runs use this. It is open
loop: request ``i`` is due at ``start + i / rate`` whatever happened to the earlier
ones, and its latency is measured from when it was *due*, not from when it was sent,
so a server that falls behind is charged for the queue it causes (no coordinated
omission). ``--connections`` keep-alive connections carry the load, one request at a
time each; a request due while all are busy waits for the first free one, and that
wait counts.

It speaks just enough HTTP/1.1 itself (asyncio protocols on uvloop: a prebuilt request
per key, responses framed by ``Content-Length``) to cost a few tens of microseconds
of CPU per request. An aiohttp client costs several times that: on this 2-core
machine it could not even reach half of B1's throughput, so it measured itself.

With ``--rate 0`` it is closed loop instead: every connection sends back to back (the
smoke run's fallback when wrk is missing).

Prints one JSON object on stdout.

    python -m bench.constant_rate --url http://127.0.0.1:8080/v1/images/generations \\
        --keys-file keys.txt --rate 1000 --duration 10 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any, cast

__all__ = ["BODY", "percentile", "run"]

BODY = b'{"prompt": "bench", "size": "256x256"}'
_MIN_SLEEP_S = 0.001
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def build_requests(url: str, keys: list[str]) -> list[bytes]:
    parts = urllib.parse.urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
    )
    return [(head + f"Authorization: Bearer {key}\r\n\r\n").encode() + BODY for key in keys or [""]]


class _Load:
    """The shared state of one run: what is due, who is free, what was seen."""

    def __init__(self, requests: list[bytes], closed_loop: bool) -> None:
        self.requests = requests
        self.closed_loop = closed_loop
        self.loop = asyncio.get_running_loop()
        self.free: collections.deque[_Connection] = collections.deque()
        self.waiting: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.recording = False
        #: Closed loop: a connection sends again as soon as it has its answer.
        self.sending = False
        self.sent = 0
        self.in_flight = 0
        self.idle = asyncio.Event()

    def dispatch(self, due: float) -> None:
        if self.free:
            self.free.popleft().send(due)
        else:
            self.waiting.append(due)

    def done(self, connection: _Connection, status: int | None, due: float) -> None:
        self.in_flight -= 1
        now = time.perf_counter()
        if self.recording:
            if status is None:
                self.errors["connection lost"] += 1
            else:
                self.statuses[status] += 1
                self.latencies.append(now - due)
        if status is None:
            return
        if self.waiting:
            connection.send(self.waiting.popleft())
        elif self.closed_loop and self.sending:
            connection.send(now)
        else:
            self.free.append(connection)
            if self.in_flight == 0:
                self.idle.set()

    def next_request(self) -> bytes:
        self.sent += 1
        self.in_flight += 1
        self.idle.clear()
        return self.requests[self.sent % len(self.requests)]


class _Connection(asyncio.Protocol):
    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.status = 0
        self.body_length: int | None = None
        self.due = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, due: float) -> None:
        assert self.transport is not None
        self.due, self.busy = due, True
        self.transport.write(self.load.next_request())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.body_length is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            if match is None:  # every server here frames its bodies with Content-Length
                assert self.transport is not None
                self.transport.close()
                return
            self.status = int(head[9:12])
            self.body_length = int(match.group(1))
            del self.buffer[: end + 4]
        if len(self.buffer) < self.body_length:
            return
        del self.buffer[: self.body_length]
        self.body_length, self.busy = None, False
        self.load.done(self, self.status, self.due)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.busy = False
            self.load.done(self, None, self.due)
        if self in self.load.free:
            self.load.free.remove(self)


async def run(
    url: str,
    keys: list[str],
    *,
    rate: float,
    duration: float,
    connections: int,
) -> dict[str, Any]:
    """Run the load; a summary with latencies in milliseconds."""
    parts = urllib.parse.urlsplit(url)
    load = _Load(build_requests(url, keys), closed_loop=rate <= 0)
    loop = load.loop
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    opened = []
    for _ in range(connections):
        _transport, connection = await loop.create_connection(
            lambda: _Connection(load), parts.hostname or "127.0.0.1", parts.port or 80
        )
        opened.append(connection)
    # One request on each connection first, so no figure includes connection set-up.
    for connection in opened:
        connection.send(clock())
    await asyncio.wait_for(load.idle.wait(), 30)
    load.recording = True
    start = clock()
    lateness: list[float] = []
    if rate > 0:
        total = int(rate * duration)
        i = 0
        while i < total:
            now = clock()
            while i < total and start + i / rate <= now:
                lateness.append(now - (start + i / rate))
                load.dispatch(start + i / rate)
                i += 1
            if i < total:
                # At least a millisecond: uvloop's timers have that resolution, so a
                # shorter sleep returns at once and the loop spins, taking a core from
                # the server it measures. Requests due meanwhile go out together, late
                # by under a millisecond, and that lateness counts in their latency.
                await asyncio.sleep(max(_MIN_SLEEP_S, start + i / rate - clock()))
    else:
        load.sending = True
        while load.free:
            load.free.popleft().send(clock())
        await asyncio.sleep(duration)
        load.sending = False
    if load.in_flight or load.waiting:
        await asyncio.wait_for(load.idle.wait(), 120)
    elapsed = clock() - start
    for connection in opened:
        if connection.transport is not None:
            connection.transport.close()
    latencies = sorted(load.latencies)
    lateness.sort()
    requests = len(latencies)
    return {
        "mode": "fixed-rate" if rate > 0 else "closed-loop",
        "target_rate": rate,
        "achieved_rate": requests / elapsed if elapsed > 0 else 0.0,
        "requests": requests,
        "duration_s": elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] * 1000) if latencies else 0.0,
        "send_lateness_p99_ms": percentile(lateness, 0.99) * 1000,
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "errors": dict(load.errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys-file", type=Path, help="API keys, one a line (sent in turn)")
    parser.add_argument("--rate", type=float, required=True, help="requests/s; 0: closed loop")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("--url must be on the loopback interface")
    keys = args.keys_file.read_text().split() if args.keys_file else []
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    started = time.time()
    summary = asyncio.run(
        run(args.url, keys, rate=args.rate, duration=args.duration, connections=args.connections)
    )
    summary["started_at"] = started
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
