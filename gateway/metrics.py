"""Prometheus metrics, correct with several worker processes.

One :class:`Metrics` per app (no module globals). With ``server.workers > 1`` the
server sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start; every worker then
writes its values to shared files and ``/metrics``, answered by any worker, adds them up.

In a single process, the hot path's counters and histograms (those reached through
:meth:`Metrics.labelled` and :meth:`Metrics.request_done`) are kept as plain numbers and
handed to ``prometheus_client`` when ``/metrics`` is rendered: a request costs a few
additions instead of a lock and a method call per metric, and a scrape sees every
request that finished before it, as before.
"""

from __future__ import annotations

import bisect
import os
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client import values as prometheus_values
from redis.exceptions import RedisError

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "multiprocess_dir"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _LocalCounter:
    """A counter child's increments, kept until :meth:`flush`."""

    __slots__ = ("_child", "count")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.count = 0.0

    def inc(self, amount: float = 1) -> None:
        self.count += amount

    def flush(self) -> None:
        if self.count:
            self._child.inc(self.count)
            self.count = 0.0


class _LocalHistogram:
    """A histogram child's observations, as bucket counts and a sum, until :meth:`flush`.

    Bucketed as ``prometheus_client`` does (the first bound at or above the value), and
    added to the child's own bucket and sum values.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        buckets = self._child._buckets
        for i, count in enumerate(counts):
            if count:
                buckets[i].inc(count)
                counts[i] = 0
        self._child._sum.inc(self._sum)
        self._sum = 0.0


def _values_in_files() -> None:
    """Make metrics created from now on keep their values in ``PROMETHEUS_MULTIPROC_DIR``.

    prometheus_client picks where values live once, when it is first imported. The
    supervisor imports it (through the config checks) before it sets the directory and
    forks the workers, so a worker picks again, before its first metric.
    """
    if prometheus_values.ValueClass is prometheus_values.MutexValue:
        prometheus_values.ValueClass = prometheus_values.get_value_class()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self._shared = multiprocess_dir() is not None
        if self._shared:
            _values_in_files()
        # Label sets are few (routes x statuses x codes, backends x outcomes).
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._request_children: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._locals: list[_LocalCounter | _LocalHistogram] = []
        # In multiprocess mode values live in files; a per-process registry would
        # count them twice, so the metrics are registered nowhere.
        self._registry = CollectorRegistry()
        registry: Any = None if self._shared else self._registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...], mode: Literal["max"]) -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        self.requests = counter(
            "gateway_requests_total",
            "HTTP requests by route, status and error code.",
            ("route", "status", "code"),
        )
        self.request_seconds = histogram(
            "gateway_request_duration_seconds",
            "Whole-request latency.",
            ("route",),
            _LATENCY_BUCKETS,
        )
        self.upstream_seconds = histogram(
            "gateway_upstream_duration_seconds",
            "Upstream call latency.",
            ("backend",),
            _LATENCY_BUCKETS,
        )
        self.admission_seconds = histogram(
            "gateway_admission_duration_seconds",
            "Redis admission latency.",
            (),
            _FAST_BUCKETS,
        )
        self.admissions = counter(
            "gateway_admissions_total", "Admission decisions by outcome.", ("outcome",)
        )
        self.images_delivered = counter(
            "gateway_images_delivered_total",
            "Images delivered by synchronous generations, by model and plan.",
            ("model", "plan"),
        )
        self.credits_charged = counter(
            "gateway_credits_charged_total",
            "Credits charged for them (plans with monthly_credits), by model and plan.",
            ("model", "plan"),
        )
        self.key_lookups = counter(
            "gateway_key_lookups_total",
            "Key lookups by the layer that answered (process, redis, postgres) and result.",
            ("layer", "result"),
        )
        self.upstream_calls = counter(
            "gateway_upstream_calls_total",
            "Upstream calls by backend and outcome.",
            ("backend", "outcome"),
        )
        self.breaker_state = gauge(
            "gateway_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ("backend",),
            "max",
        )
        self.flush_lag = gauge(
            "gateway_usage_flush_lag_seconds",
            "Seconds since this process last flushed usage to Postgres (or since it started).",
            (),
            "max",
        )
        self.flush_pending = gauge(
            "gateway_usage_pending_rows",
            "Rows written by the last flush.",
            (),
            "max",
        )
        self.flush_failures = counter(
            "gateway_usage_flush_failures_total",
            "Failed usage flushes.",
        )
        self.storage_operations = counter(
            "gateway_storage_operations_total",
            "File store calls by operation (put, get, stream, head, delete, list, sign) "
            "and outcome (ok, not_found, error).",
            ("op", "outcome"),
        )
        self.storage_seconds = histogram(
            "gateway_storage_operation_duration_seconds",
            "File store call latency (stream: the whole transfer of one file).",
            ("op",),
            _LATENCY_BUCKETS,
        )
        self.storage_stored_bytes = counter(
            "gateway_storage_stored_bytes_total", "Bytes written to the file store."
        )
        self.storage_swept_objects = counter(
            "gateway_storage_swept_objects_total",
            "Files deleted from the file store for being past the retention.",
        )
        self.jobs = counter("gateway_jobs_total", "Image jobs ended, by status.", ("status",))
        self.jobs_unfinished = gauge(
            "gateway_jobs_unfinished",
            "Jobs queued and running now, in all processes (counted by each process's sweep).",
            ("status",),
            "max",
        )
        self.job_queue_depth = gauge(
            "gateway_job_queue_depth",
            "Jobs in the queue's stream: waiting, or taken and not yet done.",
            (),
            "max",
        )
        self.job_queued_seconds = histogram(
            "gateway_job_queued_seconds",
            "Time from a job's submission to its first run.",
            (),
            _LATENCY_BUCKETS,
        )
        self.job_running_seconds = histogram(
            "gateway_job_running_seconds",
            "Time one run of a job took.",
            (),
            _LATENCY_BUCKETS,
        )
        self.job_attempts = counter(
            "gateway_job_attempts_total", "Runs of jobs started (a re-run counts again)."
        )
        self.config_info = gauge(
            "gateway_config_info",
            "The config in effect, by the first 16 hex digits of its SHA-256: 1 (0: before a "
            "reload).",
            ("hash",),
            "max",
        )
        self.config_loaded = gauge(
            "gateway_config_loaded_timestamp_seconds",
            "When the config in effect was loaded (start-up, or the last reload), Unix time.",
            (),
            "max",
        )
        self.config_reloads = counter(
            "gateway_config_reloads_total",
            "Config reloads (SIGHUP) by outcome: applied, refused (the file failed its checks).",
            ("outcome",),
        )
        self.billing_events = counter(
            "gateway_billing_events_total",
            "Usage and credit events POSTed to billing.events_url, by outcome: sent (2xx), "
            "retry (refused or unreachable: sent again later).",
            ("outcome",),
        )
        self.webhook_deliveries = counter(
            "gateway_webhook_deliveries_total",
            "Webhook deliveries by outcome: delivered (2xx), retry (failed, tried again"
            " later), gave_up (failed, the last attempt).",
            ("outcome",),
        )
        self.webhook_delivery_seconds = histogram(
            "gateway_webhook_delivery_seconds",
            "Time from a job's end to its webhook's delivery (2xx).",
            (),
            _LATENCY_BUCKETS,
        )
        self.dependency_errors = counter(
            "gateway_dependency_errors_total",
            "Errors talking to Redis or Postgres.",
            ("dependency",),
        )

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)`` (or ``metric`` itself, without labels), looked up once
        per label set; in a single process, a local stand-in for a counter or histogram.
        """
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*values) if values else metric
            if not self._shared and isinstance(metric, Counter | Histogram):
                local = (_LocalCounter if isinstance(metric, Counter) else _LocalHistogram)(child)
                self._locals.append(local)
                child = local
            self._children[key] = child
        return child

    def request_done(self, route: str, status: int, code: str, seconds: float) -> None:
        """Count a request that took ``seconds`` (one lookup for both metrics' children)."""
        key = (route, status, code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.labelled(self.requests, route, str(status), code),
                self.labelled(self.request_seconds, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def storage_operation(self, op: str, outcome: str, seconds: float) -> None:
        """Count one file store call that took ``seconds``."""
        self.labelled(self.storage_operations, op, outcome).inc()
        self.labelled(self.storage_seconds, op).observe(seconds)

    def storage_bytes(self, stored: int) -> None:
        self.labelled(self.storage_stored_bytes).inc(stored)

    def storage_swept(self, count: int) -> None:
        self.labelled(self.storage_swept_objects).inc(count)

    def sync(self) -> None:
        """Hand what the local stand-ins hold to ``prometheus_client``."""
        for local in self._locals:
            local.flush()

    def flush_failed(self, exc: Exception) -> None:
        self.flush_failures.inc()
        dependency = "redis" if isinstance(exc, RedisError) else "postgres"
        self.dependency_errors.labels(dependency).inc()

    def render(self) -> bytes:
        self.sync()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
