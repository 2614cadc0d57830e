"""Routing and resilience: fallback, safe retries, the circuit breaker, the concurrency cap."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.gateway import MakeGateway, MakeKey
from tests.support.processes import free_port
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.usage import today, usage_rows


def chain_config(primary: FakeUpstream | str, secondary: FakeUpstream, **primary_opts: Any):
    primary_url = primary if isinstance(primary, str) else primary.url
    return {
        "backends": {
            "primary": {
                "type": "http",
                "base_url": primary_url,
                "retries": 0,
                "retry_backoff_seconds": 0.01,
                **primary_opts,
            },
            "secondary": {"type": "http", "base_url": secondary.url},
        },
        "models": {"remote": ["primary", "secondary"]},
    }


async def test_falls_back_when_the_first_backend_fails(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    second_upstream: FakeUpstream,
    db: Any,
):
    fake_upstream.mode = "fail"
    gateway = await make_gateway(chain_config(fake_upstream, second_upstream))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote", n=2)
    assert response.status == 200
    assert len((await response.json())["data"]) == 2
    assert len(fake_upstream.requests) == 1
    assert len(second_upstream.requests) == 1
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_falls_back_when_the_first_backend_is_unreachable(
    make_gateway: MakeGateway, make_key: MakeKey, second_upstream: FakeUpstream
):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    gateway = await make_gateway(chain_config(closed, second_upstream))
    key = await make_key()
    assert (await gateway.generate(key.key, model="remote")).status == 200


async def test_retries_a_busy_upstream_then_succeeds(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.fail_first, fake_upstream.fail_status = 2, 503
    gateway = await make_gateway(upstream_config(fake_upstream, retries=2))
    key = await make_key()
    assert (await gateway.generate(key.key, model="remote")).status == 200
    assert len(fake_upstream.requests) == 3


async def test_honours_the_upstreams_retry_after_within_the_deadline(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    # The upstream asks for 30 s, past the 2 s deadline: give up now, do not hang.
    fake_upstream.fail_first, fake_upstream.fail_status = 1, 429
    fake_upstream.retry_after = "30"
    gateway = await make_gateway(upstream_config(fake_upstream, timeout=2.0, retries=3))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote")
    assert response.status == 502
    assert len(fake_upstream.requests) == 1


async def test_does_not_retry_an_upstream_500(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.fail_first, fake_upstream.fail_status = 1, 500
    gateway = await make_gateway(upstream_config(fake_upstream, retries=3))
    key = await make_key()
    assert (await gateway.generate(key.key, model="remote")).status == 502
    assert len(fake_upstream.requests) == 1


async def test_retries_stop_at_the_limit(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db: Any
):
    fake_upstream.fail_first, fake_upstream.fail_status = 10, 502
    gateway = await make_gateway(upstream_config(fake_upstream, retries=2))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote")
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_error"
    assert len(fake_upstream.requests) == 3
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_skips_the_backend_then_probes_and_closes(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    clock = Clock()
    fake_upstream.fail_first, fake_upstream.fail_status = 3, 500
    gateway = await make_gateway(
        upstream_config(fake_upstream, breaker_failures=3, breaker_reset_seconds=30),
        monotonic=clock,
    )
    key = await make_key("pro")

    async def breaker_gauge() -> float:
        from tests.support.metrics import metric_total

        text = await (await gateway.client.get("/metrics")).text()
        return metric_total(text, "gateway_breaker_state", backend="remote")

    for _ in range(3):
        assert (await gateway.generate(key.key, model="remote")).status == 502
    assert await breaker_gauge() == 2  # open
    # Open: answered at once, the upstream is not called.
    refused = await gateway.generate(key.key, model="remote")
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "service_unavailable"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert len(fake_upstream.requests) == 3
    # Half-open after the reset time: one probe goes through; it succeeds and closes.
    clock.now += 30
    assert (await gateway.generate(key.key, model="remote")).status == 200
    assert (await gateway.generate(key.key, model="remote")).status == 200
    assert len(fake_upstream.requests) == 5
    assert gateway.services.router.backends["remote"].state.value == "closed"
    assert await breaker_gauge() == 0


async def test_breaker_reopens_when_the_probe_fails(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    clock = Clock()
    fake_upstream.fail_first, fake_upstream.fail_status = 3, 500
    gateway = await make_gateway(
        upstream_config(fake_upstream, breaker_failures=2, breaker_reset_seconds=10),
        monotonic=clock,
    )
    key = await make_key("pro")
    for _ in range(2):
        assert (await gateway.generate(key.key, model="remote")).status == 502
    clock.now += 10
    assert (await gateway.generate(key.key, model="remote")).status == 502  # the probe
    assert (await gateway.generate(key.key, model="remote")).status == 503  # open again
    assert len(fake_upstream.requests) == 3


async def test_open_breaker_falls_back_at_once(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    second_upstream: FakeUpstream,
):
    fake_upstream.mode = "fail"
    gateway = await make_gateway(chain_config(fake_upstream, second_upstream, breaker_failures=1))
    key = await make_key("pro")
    for _ in range(3):
        assert (await gateway.generate(key.key, model="remote")).status == 200
    assert len(fake_upstream.requests) == 1  # skipped while open
    assert len(second_upstream.requests) == 3


async def test_concurrency_cap_refuses_past_the_queue(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db: Any
):
    fake_upstream.mode = "hang"
    gateway = await make_gateway(upstream_config(fake_upstream, max_concurrency=1, max_queue=1))
    key = await make_key("pro")
    first = asyncio.create_task(gateway.generate(key.key, model="remote"))
    while len(fake_upstream.requests) < 1:  # the first holds the only slot
        await asyncio.sleep(0.01)
    second = asyncio.create_task(gateway.generate(key.key, model="remote"))  # queued
    while gateway.services.router.backends["remote"]._waiting < 1:
        await asyncio.sleep(0.01)
    third = await gateway.generate(key.key, model="remote")
    assert third.status == 503
    assert third.headers["Retry-After"] == "1"
    assert (await third.json())["error"]["code"] == "service_unavailable"
    fake_upstream.release.set()
    assert (await first).status == 200
    assert (await second).status == 200
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_deadline_covers_the_retries(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.fail_first, fake_upstream.fail_status = 1000, 503
    gateway = await make_gateway(
        upstream_config(fake_upstream, timeout=0.5, retries=1000, retry_backoff_seconds=0.05)
    )
    key = await make_key()
    response = await gateway.generate(key.key, model="remote")
    assert response.status in (502, 504)
    # Backoff doubles from 0.05 s: the 0.5 s deadline leaves room for a handful of tries.
    assert 2 <= len(fake_upstream.requests) <= 8
