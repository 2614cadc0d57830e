"""The hot path's metrics, kept locally in a single process, read as prometheus_client's."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.metrics import _LATENCY_BUCKETS, Metrics


def _samples(text: bytes, name: str) -> dict[str, float]:
    """``{line without its value: value}`` for the lines of metric ``name``."""
    found = {}
    for line in text.decode().splitlines():
        if line.startswith(name) and not line.startswith(f"{name}_created"):
            series, _, value = line.rpartition(" ")
            found[series.replace("gateway_request_duration_seconds", "m")] = float(value)
    return found


def test_local_histograms_bucket_every_value_as_prometheus_client_does():
    metrics = Metrics()
    reference = Histogram(
        "m", "m", ("route",), buckets=_LATENCY_BUCKETS, registry=CollectorRegistry()
    )
    rng = random.Random(7)
    values = [0.0, *_LATENCY_BUCKETS, 1e-9, 31.0, 1e9]  # on each bound, and past the last
    values += [rng.uniform(0, 40) for _ in range(2000)] + [
        rng.expovariate(200) for _ in range(2000)
    ]
    for value in values:
        metrics.request_done("/r", 200, "", value)
        reference.labels("/r").observe(value)

    registry = CollectorRegistry()
    registry.register(reference)
    expected = _samples(generate_latest(registry), "m_")
    got = _samples(metrics.render(), "gateway_request_duration_seconds_")
    assert got.keys() == expected.keys()
    for series, value in expected.items():
        assert abs(got[series] - value) <= 1e-6 * max(1.0, abs(value)), series
    assert got['m_count{route="/r"}'] == len(values)


def test_counts_reach_each_scrape_and_are_not_counted_twice():
    metrics = Metrics()
    for _ in range(3):
        metrics.request_done("/r", 200, "", 0.01)
    assert b'gateway_requests_total{code="",route="/r",status="200"} 3.0' in metrics.render()
    metrics.labelled(metrics.admissions, "admitted").inc()
    text = metrics.render()
    assert b'gateway_requests_total{code="",route="/r",status="200"} 3.0' in text
    assert b'gateway_admissions_total{outcome="admitted"} 1.0' in text
