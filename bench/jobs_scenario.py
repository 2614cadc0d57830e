"""The jobs scenario: a generation as a job against the same generation done synchronously.

One gateway (G, ``server.workers: 1``, ``jobs.concurrency`` well above the clients, so a
worker is always free) in front of a slow fake upstream (:mod:`bench.image_upstream`: it
answers one ``S`` KiB image after ``D`` seconds). ``C`` clients, each in a closed loop:

1. **sync**: ``POST /v1/images/generations`` (``b64_json``); the time to the answer;
2. **jobs**: ``POST /v1/images/jobs`` (``b64_json``, a ``webhook_url`` on this process),
   then wait for its webhook; measured: the submit's answer (202), submit to a worker
   starting the job (the row's ``started_at``), submit to the job recorded done
   (``completed_at``) and submit to its webhook received, the user's end-to-end time;
3. **submit throughput**: the same clients submit jobs (no webhook) as fast as answered.

The target: a job's end-to-end time (to its webhook) is within 50 ms of the sync
call's at p99. The clock of every timestamp is this machine's, so client times and the
gateway's row timestamps compare.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench.gateway_setup import ROOT, gateway_config, start_gateway
from bench.image_upstream import B64_PREFIX
from bench.procs import Children, free_port, python_command, wait_http

__all__ = ["JobsOutcome", "JobsScenario", "JobsSettings", "percentile"]

#: The target: a job's end-to-end p99 at most this much above the sync call's.
TARGET_MS = 50.0


@dataclass(frozen=True)
class JobsSettings:
    delay_s: float = 0.5
    size_kib: int = 64
    connections: int = 8
    duration_s: float = 10.0
    concurrency: int = 64


@dataclass
class JobsOutcome:
    settings: dict[str, Any] = field(default_factory=dict)
    #: Per measure: the samples in ms (or, for throughput, one value per second).
    samples: dict[str, list[float]] = field(default_factory=dict)
    submits_per_s: float = 0.0
    syncs_per_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def p(self, name: str, q: float) -> float:
        return percentile(self.samples.get(name, []), q)

    @property
    def gap_p99_ms(self) -> float:
        return self.p("webhook", 99) - self.p("sync", 99)

    @property
    def passed(self) -> bool:
        return not self.errors and self.gap_p99_ms <= TARGET_MS


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank); NaN without values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class JobsScenario:
    def __init__(
        self,
        settings: JobsSettings,
        *,
        children: Children,
        workdir: Path,
        keys: list[str],
        database_url: str,
        gateway_common: Callable[[int], dict[str, Any]],
        backend: str,
        log: Callable[[str], None],
    ) -> None:
        self.s = settings
        self.children = children
        self.workdir = workdir
        self.keys = keys
        self.database_url = database_url
        self.gateway_common = gateway_common
        self.backend = backend
        self.log = log
        self.outcome = JobsOutcome()

    def start(self) -> str:
        """The upstream and G; G's base URL."""
        port = free_port()
        argv = python_command("-m", "bench.image_upstream", "--port", str(port))
        argv += ["--delay", f"{self.s.delay_s:g}", "--size-kib", str(self.s.size_kib)]
        argv += ["--max-n", "1"]
        upstream = self.children.start(
            "jobs-upstream", argv, self.workdir / "jobs-up.log", cwd=ROOT
        )
        wait_http(f"http://127.0.0.1:{port}/healthz", upstream, timeout=60)
        g_port = free_port()
        raw = gateway_config(
            upstream_url=f"http://127.0.0.1:{port}{B64_PREFIX}",
            workers=1,
            **self.gateway_common(g_port),
        )
        raw["backends"]["upstream"]["sizes"] = ["256x256"]
        raw["storage"] = {"url": f"file://{self.workdir}/jobs-images"}
        raw["jobs"] = {"concurrency": self.s.concurrency}
        raw["egress"] = {"allow": ["127.0.0.1/32"]}
        raw["webhooks"] = {"allow_http": True}
        gateway = start_gateway(self.children, "jobs-G", raw, self.workdir)
        base = f"http://127.0.0.1:{g_port}"
        wait_http(base + "/healthz", gateway, timeout=60)
        return base

    def run(self) -> JobsOutcome:
        s = self.s
        self.outcome.settings = {
            "upstream delay": f"{s.delay_s:g} s",
            "image": f"{s.size_kib} KiB, n = 1, b64_json",
            "clients": str(s.connections),
            "seconds per phase": f"{s.duration_s:g}",
            "jobs.concurrency": str(s.concurrency),
        }
        base = self.start()
        asyncio.run(self._measure(base))
        return self.outcome

    # -- the load ------------------------------------------------------------------------

    async def _measure(self, base: str) -> None:
        o = self.outcome
        db = await asyncpg.connect(self.database_url)
        # Webhooks need the user to have a secret; the bench does not verify signatures.
        await db.execute(
            "INSERT INTO webhook_secrets (user_id, nonce) SELECT id, 'bench' FROM users"
            " ON CONFLICT DO NOTHING"
        )
        arrived: dict[str, asyncio.Future[float]] = {}

        async def hook(request: web.Request) -> web.Response:
            at = time.time()
            body = await request.read()
            job_id = json.loads(body)["data"]["id"]
            waiting = arrived.get(job_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(at)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        hook_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        hook_url = f"http://127.0.0.1:{hook_port}/hook"
        connector = aiohttp.TCPConnector(limit=self.s.connections * 2)
        timeout = aiohttp.ClientTimeout(total=60)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await self._warm(session, base)
                self.log(f"jobs: sync calls, {self.s.connections} clients")
                o.syncs_per_s = await self._loop(self._sync_one, session, base)
                self.log("jobs: jobs with a webhook, waited for")
                started: list[tuple[str, float]] = []

                async def job_one(key: str) -> None:
                    await self._job_one(session, base, key, hook_url, arrived, started)

                await self._loop_with(job_one)
                await self._row_times(db, started)
                self.log("jobs: submit throughput (no waiting)")
                o.submits_per_s = await self._loop(self._submit_one, session, base)
        finally:
            await runner.cleanup()
            await db.close()

    async def _warm(self, session: aiohttp.ClientSession, base: str) -> None:
        for key in self.keys[: self.s.connections]:
            await self._post(session, base + "/v1/images/generations", key, {})

    async def _post(
        self, session: aiohttp.ClientSession, url: str, key: str, extra: dict[str, Any]
    ) -> tuple[int, Any]:
        body = {"prompt": "bench", "size": "256x256", "response_format": "b64_json", **extra}
        headers = {"Authorization": f"Bearer {key}"}
        async with session.post(url, json=body, headers=headers) as response:
            data = await response.read()
            return response.status, data

    async def _loop(self, one: Any, session: aiohttp.ClientSession, base: str) -> float:
        async def call(key: str) -> None:
            await one(session, base, key)

        return await self._loop_with(call)

    async def _loop_with(self, one: Callable[[str], Any]) -> float:
        """``C`` clients calling ``one(key)`` in turn for the phase's duration; calls/s."""
        deadline = time.monotonic() + self.s.duration_s
        done = 0

        async def client(index: int) -> None:
            nonlocal done
            i = index
            while time.monotonic() < deadline:
                await one(self.keys[i % len(self.keys)])
                i += self.s.connections
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(self.s.connections)))
        return done / (time.monotonic() - started)

    async def _sync_one(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        t0 = time.perf_counter()
        status, _ = await self._post(session, base + "/v1/images/generations", key, {})
        self._sample("sync", (time.perf_counter() - t0) * 1000, status, 200)

    async def _submit_one(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        t0 = time.perf_counter()
        status, _ = await self._post(session, base + "/v1/images/jobs", key, {})
        self._sample("submit (throughput phase)", (time.perf_counter() - t0) * 1000, status, 202)

    async def _job_one(
        self,
        session: aiohttp.ClientSession,
        base: str,
        key: str,
        hook_url: str,
        arrived: dict[str, asyncio.Future[float]],
        started: list[tuple[str, float]],
    ) -> None:
        wall0, t0 = time.time(), time.perf_counter()
        status, data = await self._post(
            session, base + "/v1/images/jobs", key, {"webhook_url": hook_url}
        )
        self._sample("submit", (time.perf_counter() - t0) * 1000, status, 202)
        if status != 202:
            return
        job_id = json.loads(data)["id"]
        waiting = arrived.setdefault(job_id, asyncio.get_running_loop().create_future())
        try:
            at = await asyncio.wait_for(waiting, timeout=30)
        except TimeoutError:
            self.outcome.errors.append(f"no webhook for {job_id} within 30 s")
            return
        finally:
            arrived.pop(job_id, None)
        self.outcome.samples.setdefault("webhook", []).append((at - wall0) * 1000)
        started.append((job_id, wall0))

    async def _row_times(self, db: asyncpg.Connection, started: list[tuple[str, float]]) -> None:
        rows = await db.fetch(
            "SELECT id, status, extract(epoch FROM started_at) AS started,"
            " extract(epoch FROM completed_at) AS completed FROM image_jobs WHERE id = ANY($1)",
            [job_id for job_id, _ in started],
        )
        submitted = dict(started)
        for row in rows:
            if row["status"] != "succeeded":
                self.outcome.errors.append(f"job {row['id']} ended {row['status']}")
                continue
            wall0 = submitted[row["id"]]
            samples = self.outcome.samples
            samples.setdefault("to start", []).append((float(row["started"]) - wall0) * 1000)
            samples.setdefault("to done", []).append((float(row["completed"]) - wall0) * 1000)

    def _sample(self, name: str, ms: float, status: int, expected: int) -> None:
        if status != expected:
            self.outcome.errors.append(f"{name}: HTTP {status}")
            return
        self.outcome.samples.setdefault(name, []).append(ms)
