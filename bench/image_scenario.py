"""The image workload: a slow upstream answering with megabytes, hundreds of requests in flight.

The fast-upstream scenario measures what the gateway adds to a tiny request answered
at once; real image traffic is the opposite. Here a fake upstream
(:mod:`bench.image_upstream`) answers after ``D`` seconds with ``n`` images of ``S``
KiB, as ``b64_json`` or as URLs the gateway downloads, and ``C`` clients
(:mod:`bench.image_load`) keep that many requests in flight. For each run, variant and
``n``, in turn: B0 (the upstream direct; ``b64_json`` only), B1, G, Gu and Gs3 (links
to stored images, ``b64_json`` only), the 2-process B1 and G with ``server.workers: 2``,
each in processes started for that window alone, with their RSS sampled from /proc all
along (:class:`RssSampler`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import image_report
from bench.gateway_setup import (
    IMAGE_SIZE,
    ROOT,
    URL_VARIANT_EGRESS,
    egress_supported,
    image_gateway_config,
    start_gateway,
)
from bench.image_report import ImageOutcome, ImageRun
from bench.image_upstream import B64_PREFIX, URL_PREFIX, check_png, stored_png
from bench.moto_store import MotoStore
from bench.procs import (
    Child,
    Children,
    free_port,
    process_tree,
    python_command,
    server_command,
)
from bench.procs import wait_http as wait_http_child

__all__ = ["ImageScenario", "ImageSettings", "RssSampler"]

PATH = "/v1/images/generations"
#: G answering links to its stored images (response_format url, the file store).
LINKS_CONFIG = "Gu"
#: The same with the store on an S3-compatible server (moto, :mod:`bench.moto_store`).
S3_CONFIG = "Gs3"
#: The configurations answering links instead of base64.
LINKS_CONFIGS = (LINKS_CONFIG, S3_CONFIG)
VARIANTS = ("b64", "url")
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: The memory guard's ceiling: far above any bare proxy's peak at the defaults (so a run
#: it stops fails its RSS target anyway), and far from what a shared machine can spare.
RSS_LIMIT_CEILING = 8 * 2**30


@dataclass(frozen=True)
class ImageSettings:
    delay_s: float = 2.0
    size_kib: int = 1024
    connections: int = 400
    ns: tuple[int, ...] = (1, 4)
    duration_s: float = 15.0
    warmup_s: float = 5.0
    runs: int = 3
    variants: tuple[str, ...] = VARIANTS
    #: The memory guard: serving processes above this are stopped.
    rss_limit: int = RSS_LIMIT_CEILING
    sample_s: float = 0.05
    #: Skip the 2-process configurations.
    single_process_only: bool = False
    #: Where Gu's file store goes ("": the bench's temporary directory). On a machine
    #: whose disk writeback competes with the gateway for the cores, a tmpfs (/dev/shm)
    #: measures the gateway's work alone.
    store_dir: str = ""

    @property
    def max_n(self) -> int:
        return max(self.ns)

    @property
    def pool(self) -> int:
        """Upstream connections per serving process: C x the largest n, so that neither
        B1 nor G queues on its pool (the API call holds one connection for D seconds;
        the url variant downloads n images)."""
        return self.connections * self.max_n

    @property
    def timeout_s(self) -> float:
        """When the load generator counts a request as stuck."""
        return max(60.0, 10 * self.delay_s)

    @property
    def gateway_timeout_s(self) -> float:
        """G's backend ``timeout_seconds``: never before the load generator gives a
        request up (B1 waits up to aiohttp's default 300 s)."""
        return self.timeout_s + 10

    @staticmethod
    def body(n: int, config: str = "G") -> bytes:
        """The request; Gu and Gs3 ask for links (``response_format: url``), not base64."""
        body: dict[str, object] = {"prompt": "bench", "size": IMAGE_SIZE, "n": n}
        if config in LINKS_CONFIGS:
            body["response_format"] = "url"
        return json.dumps(body).encode()


def default_rss_limit() -> int:
    """Half of the memory available now, at most :data:`RSS_LIMIT_CEILING`: a runaway
    gateway must not take the machine from the other work on it."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return min(RSS_LIMIT_CEILING, int(line.split()[1]) * 1024 // 2)
    return RSS_LIMIT_CEILING


def _tree_rss(roots: list[int]) -> tuple[int, list[int]]:
    pids = [p for root in roots for p in process_tree(root)]
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total, pids


def _listening_inodes(port: int) -> set[str]:
    """The inodes of the IPv4 sockets listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            found.add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found.add(target[8:-1])
    except OSError:
        pass
    return found


class RssSampler(threading.Thread):
    """The peak of the summed RSS of ``roots`` and their descendants, sampled every
    ``interval`` seconds until :meth:`stop`; over ``limit`` bytes, it kills them all."""

    def __init__(self, roots: list[int], interval: float, limit: int) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval, self.limit = roots, interval, limit
        self.peak = 0
        self.exceeded = False
        self._stopping = threading.Event()

    def run(self) -> None:
        pids: list[int] = []
        refreshed = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - refreshed > 1.0:  # a /proc walk is ~ms: not every sample
                _, pids = _tree_rss(self.roots)
                refreshed = now
            total = 0
            for pid in pids:
                try:
                    total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
                except (OSError, IndexError, ValueError):
                    continue
            self.peak = max(self.peak, total)
            if self.limit and total > self.limit:
                self.exceeded = True
                for pid in pids:  # only the serving processes this bench started
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                return
            self._stopping.wait(self.interval)

    def stop(self) -> int:
        self._stopping.set()
        self.join()
        return self.peak


@dataclass
class _Servers:
    """The processes serving one configuration for one window."""

    base: str
    roots: list[int]
    children: list[Child]
    processes: int
    own_rss: bool = True
    #: Gs3's S3 server (its CPU is counted apart from the gateway's).
    store: MotoStore | None = None


class ImageScenario:
    """Runs the image workload; fills an :class:`ImageOutcome`."""

    def __init__(
        self,
        settings: ImageSettings,
        *,
        children: Children,
        workdir: Path,
        keys: list[str],
        gateway_common: Callable[[int], dict[str, object]],
        backend: str,
        log: Callable[[str], None],
        workers: bool,
    ) -> None:
        """``gateway_common(port)`` gives :func:`gateway_config`'s arguments for a G on
        ``port`` (database, Redis, backend type); ``workers``: the gateway has
        ``server.workers``."""
        self.s = settings
        self.children = children
        self.workdir = workdir
        self.keys_file = workdir / "image-keys.txt"
        self.keys_file.write_text("\n".join(keys) + "\n")
        self.key = keys[0]
        self.gateway_common = gateway_common
        self.backend = backend
        self.log = log
        self.workers = workers
        self.outcome = ImageOutcome()
        self.upstream = ""
        self.upstream_pids: list[int] = []
        image = stored_png(settings.size_kib * 1024, 0)
        self.image_bytes = len(image)
        self.dimensions = check_png(image)
        self.b64_bytes = len(base64.b64encode(image))

    # -- processes -------------------------------------------------------------------

    def start_upstream(self) -> None:
        port = free_port()
        argv = python_command("-m", "bench.image_upstream", "--port", str(port))
        argv += ["--delay", f"{self.s.delay_s:g}", "--size-kib", str(self.s.size_kib)]
        argv += ["--max-n", str(self.s.max_n)]
        child = self.children.start(
            "image-upstream", argv, self.workdir / "image-upstream.log", cwd=ROOT
        )
        self.upstream = f"http://127.0.0.1:{port}"
        wait_http_child(self.upstream + "/healthz", child, timeout=60)
        self.upstream_pids = [child.pid]

    def _prefix(self, variant: str) -> str:
        return B64_PREFIX if variant == "b64" else URL_PREFIX

    def start(self, config: str, variant: str) -> _Servers:
        if config == "B0":
            return _Servers(
                self.upstream + self._prefix(variant).removesuffix("/v1"),
                self.upstream_pids,
                [],
                1,
                own_rss=False,
            )
        processes = 2 if config.endswith("x2") else 1
        port = free_port()
        store: MotoStore | None = None
        if config.startswith("B1"):
            argv = server_command("-m", "bench.bare_proxy", "--port", str(port))
            argv += ["--upstream", self.upstream + self._prefix(variant)]
            argv += ["--max-connections", str(self.s.pool)]
            if variant == "url":
                argv.append("--download")
            if processes > 1:
                argv.append("--reuse-port")
            children = [
                self.children.start(
                    f"image-{config}-{i}", argv, self.workdir / f"image-{config}-{i}.log", cwd=ROOT
                )
                for i in range(processes)
            ]
            for child in children:
                wait_http_child(f"http://127.0.0.1:{port}/healthz", child)
        else:
            raw = image_gateway_config(
                variant=variant,
                upstream_connections=self.s.pool,
                upstream_timeout=self.s.gateway_timeout_s,
                upstream_url=self.upstream + self._prefix(variant),
                workers=processes if self.workers else None,
                **self.gateway_common(port),
            )
            env: dict[str, str] = {}
            if config == S3_CONFIG:
                store = MotoStore(self.children, self.workdir, f"image-{config}-moto")
                raw["storage"], env = store.storage(), store.env()
            else:
                raw["storage"] = {"url": f"file://{self._store_root(config)}"}
            try:
                child = start_gateway(self.children, f"image-{config}", raw, self.workdir, env=env)
                children = [child]
                wait_http_child(f"http://127.0.0.1:{port}/healthz", child, timeout=60)
            except BaseException:
                if store is not None:
                    store.stop()
                raise
        self._wait_listening([c.pid for c in children], port, processes)
        return _Servers(
            f"http://127.0.0.1:{port}",
            [c.pid for c in children],
            children,
            processes,
            store=store,
        )

    @staticmethod
    def _wait_listening(roots: list[int], port: int, processes: int) -> None:
        """Until ``processes`` of the processes under ``roots`` each hold a socket listening
        on ``port``: with SO_REUSEPORT, /healthz answered by one says nothing of the others,
        and their idle RSS must be read once all have started."""
        deadline = time.monotonic() + 60
        while True:
            inodes = _listening_inodes(port)
            ready = sum(
                bool(_socket_inodes(pid) & inodes) for root in roots for pid in process_tree(root)
            )
            if ready >= processes:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready} of {processes} processes listen on {port} after 60 s")
            time.sleep(0.05)

    def _store_root(self, config: str) -> Path:
        return Path(self.s.store_dir or self.workdir) / f"gw-bench-images-{config}"

    def stop(self, servers: _Servers) -> None:
        for child in reversed(servers.children):
            self.children.stop(child)
        if servers.store is not None:
            servers.store.stop()
        # Each window starts with an empty store: gigabytes left from the last one would
        # still be written back to disk during the next.
        shutil.rmtree(self._store_root(LINKS_CONFIG), ignore_errors=True)

    # -- one window ------------------------------------------------------------------

    def sanity(self, label: str, base: str, n: int, config: str) -> None:
        """One request: 200, and n structurally valid PNGs of the upstream's size (for Gu
        and Gs3, fetched from the links they answer)."""
        request = urllib.request.Request(  # noqa: S310 - loopback only
            base + PATH,
            data=self.s.body(n, config),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
        )
        timeout = self.s.delay_s + 60
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        if status != 200:
            raise RuntimeError(f"{label} answered {status}: {body[:500]!r}")
        data = json.loads(body)["data"]
        if len(data) != n:
            raise RuntimeError(f"{label} answered {len(data)} images, not {n}")
        for item in data:
            try:
                if config in LINKS_CONFIGS:
                    with urllib.request.urlopen(item["url"], timeout=30) as linked:  # noqa: S310
                        image = linked.read()
                else:
                    image = base64.b64decode(item["b64_json"], validate=True)
                dimensions = check_png(image)
            except (KeyError, ValueError) as exc:
                raise RuntimeError(f"{label} did not answer a valid PNG: {exc}") from None
            if dimensions != self.dimensions:
                raise RuntimeError(f"{label} answered a {dimensions} image, not {self.dimensions}")

    def measure(self, config: str, variant: str, n: int, check: bool) -> ImageRun:
        s = self.s
        servers = self.start(config, variant)
        label = f"{config} {variant} n={n}"
        try:
            idle, _ = _tree_rss(servers.roots)
            if check:
                self.sanity(label, servers.base, n, config)
            sampler = RssSampler(servers.roots, s.sample_s, s.rss_limit if servers.own_rss else 0)
            sampler.start()
            argv = python_command("-m", "bench.image_load", "--url", servers.base + PATH)
            argv += ["--keys-file", str(self.keys_file), "--body", s.body(n, config).decode()]
            argv += ["--connections", str(s.connections), "--stagger", f"{s.delay_s:g}"]
            argv += ["--warmup", f"{s.warmup_s:g}", "--duration", f"{s.duration_s:g}"]
            least = 0 if config in LINKS_CONFIGS else n * self.b64_bytes  # links are small
            argv += ["--timeout", f"{s.timeout_s:g}", "--min-bytes", str(least)]
            argv += ["--cpu", "server=" + ",".join(map(str, servers.roots))]
            argv += ["--cpu", "upstream=" + ",".join(map(str, self.upstream_pids))]
            if servers.store is not None:
                argv += ["--cpu", f"store={servers.store.pid}"]
            try:
                out = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=s.warmup_s + s.duration_s + s.timeout_s + 60,
                    cwd=ROOT,
                    check=False,
                )
            finally:
                peak = sampler.stop()
            if out.returncode != 0:
                raise RuntimeError(f"bench.image_load failed:\n{out.stdout}\n{out.stderr}")
            summary = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            if config != "B0":
                self.stop(servers)
        aborted = ""
        if sampler.exceeded:
            aborted = f"RSS above {s.rss_limit / 2**30:.1f} GiB"
        result = ImageRun(
            config=config,
            variant=variant,
            n=n,
            rps=summary["rps"],
            mb_per_s=summary["mb_per_s"],
            # no answer, no latency (a ratio of NaN fails its target)
            p50_ms=summary["p50_ms"] if summary["requests"] else math.nan,
            p99_ms=summary["p99_ms"] if summary["requests"] else math.nan,
            requests=summary["requests"],
            bad_status=sum(v for k, v in summary["statuses"].items() if k != "200"),
            other_statuses={k: v for k, v in summary["statuses"].items() if k != "200"},
            socket_errors=sum(summary["errors"].values()),
            short_answers=summary["short_answers"],
            idle_rss=idle,
            peak_rss=peak,
            cpu_s={**summary["cpu_s"], "generator": summary["generator_cpu_s"]},
            aborted=aborted,
            own_rss=servers.own_rss,
            warmup_s=summary["warmup_s"],
            warmed_up=summary["warmed_up"],
        )
        return result

    # -- the run ---------------------------------------------------------------------

    def configs(self, variant: str) -> list[str]:
        found = ["B0"] if variant == "b64" else []  # B0's url answers carry no image
        found += ["B1", "G"]
        if variant == "b64":  # the same images, stored and answered as links
            found += LINKS_CONFIGS
        if not self.s.single_process_only and self.workers:
            found += ["B1x2", "Gx2"]
        return found

    def run(self) -> ImageOutcome:
        s = self.s
        self.start_upstream()
        self.log(
            f"image workload: D {s.delay_s:g} s, {s.size_kib} KiB images "
            f"({self.image_bytes} bytes), C {s.connections}, n {list(s.ns)}, variants "
            f"{list(s.variants)}, {s.runs} run(s) of {s.warmup_s:g} + {s.duration_s:g} s"
        )
        for run in range(1, s.runs + 1):
            for variant in s.variants:
                for n in s.ns:
                    for config in self.configs(variant):
                        result = self.measure(config, variant, n, check=run == 1)
                        self.outcome.add(result)
                        self.show(result, f"image {variant} n={n} {config} run {run}/{s.runs}")
        self.fill_settings()
        if not self.workers:
            self.outcome.notes.append(
                "server.workers: not supported yet (ServerConfig has no `workers` field): "
                "the 2-process configurations were not run."
            )
        return self.outcome

    def show(self, r: ImageRun, label: str) -> None:
        problems = ""
        if r.errors:
            problems = (
                f"  (non-200 {r.bad_status}, socket errors {r.socket_errors}, short "
                f"{r.short_answers}{', ' + r.aborted if r.aborted else ''})"
            )
        rss = f", peak RSS {r.peak_rss / 2**20:.0f} MiB" if r.own_rss else ""
        self.log(
            f"{label}: {r.rps:.1f} req/s, {r.mb_per_s:.0f} MB/s, p50 {r.p50_ms:.0f} ms, "
            f"p99 {r.p99_ms:.0f} ms{rss}{problems}"
        )

    def fill_settings(self) -> None:
        s = self.s
        width, height = self.dimensions
        if egress_supported():
            egress = f"adds `{json.dumps(URL_VARIANT_EGRESS)}` (gateway.config has `egress`)"
        else:
            egress = (
                "has no `egress` section: gateway.config does not know one yet (once it "
                f"does, `{json.dumps(URL_VARIANT_EGRESS)}` is added)"
            )
        configs = {c for v in s.variants for c in self.configs(v)}
        self.outcome.settings.update(
            {
                "delay": s.delay_s,
                "store_dir": s.store_dir,
                "size_kib": s.size_kib,
                "image_bytes": self.image_bytes,
                "b64_bytes": self.b64_bytes,
                "width": width,
                "height": height,
                "connections": s.connections,
                "stagger": s.delay_s,
                "warmup": s.warmup_s,
                "duration": s.duration_s,
                "runs": s.runs,
                "variants": list(s.variants),
                "ns": list(s.ns),
                "configs": [c for c in image_report.ORDER if c in configs],
                "body_shape": '{"prompt": "bench", "size": "' + IMAGE_SIZE + '", "n": <n>}',
                "sample_ms": round(s.sample_s * 1000),
                "pool": s.pool,
                "backend": self.backend,
                "size": IMAGE_SIZE,
                "egress": egress,
                "rss_limit": s.rss_limit,
                "timeout": s.timeout_s,
                "upstream_timeout": s.gateway_timeout_s,
            }
        )


def image_settings_valid(settings: ImageSettings) -> str:
    """Why these settings cannot run, or ``""``."""
    s = settings
    if not 0 <= s.delay_s <= 60:
        return "--image-delay must be 0-60 s"
    if not 1 <= s.size_kib <= 16 * 1024:
        return "--image-size-kib must be 1-16384 (the gateway takes images up to 20 MB)"
    if not 1 <= s.connections <= 4096:
        return "--image-connections must be 1-4096"
    if not s.ns or not all(1 <= n <= 4 for n in s.ns):
        return "--image-n: values 1-4 (the bench plan's max_images_per_request)"
    if not 0 < s.duration_s <= 600 or not 0 <= s.warmup_s <= 600:
        return "--image-duration must be in (0, 600] s and --image-warmup in [0, 600]"
    if not math.isfinite(s.rss_limit) or s.rss_limit <= 0:
        return "--image-rss-limit-mib must be positive"
    return ""
