"""Rate limit and daily quota: exact under concurrency, across gateway instances."""

from __future__ import annotations

import asyncio
import itertools

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.usage import today, usage_rows


async def test_rate_limit_is_exact_across_two_instances(
    make_gateway: MakeGateway, make_key: MakeKey
):
    limit = 7
    key = await make_key("pro", requests_per_minute=limit)
    first, second = await make_gateway(), await make_gateway()
    instances = itertools.cycle([first, second])
    responses = await asyncio.gather(*(next(instances).generate(key.key) for _ in range(3 * limit)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * limit + [429] * (2 * limit)
    for response in responses:
        if response.status == 429:
            assert (await response.json())["error"]["code"] == "rate_limit_exceeded"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_rejected_requests_consume_nothing(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key("pro", requests_per_minute=2, images_per_day=100)
    assert (await gateway.generate(key.key, n=3)).status == 200
    assert (await gateway.generate(key.key, n=3)).status == 200
    for _ in range(5):  # rate limited: no images may be counted for these
        assert (await gateway.generate(key.key, n=3)).status == 429
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 6}


async def test_daily_quota_is_exact_under_concurrency(
    make_gateway: MakeGateway, make_key: MakeKey, db
):
    quota = 9
    key = await make_key("pro", images_per_day=quota)
    first, second = await make_gateway(), await make_gateway()
    instances = itertools.cycle([first, second])
    responses = await asyncio.gather(*(next(instances).generate(key.key) for _ in range(30)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * quota + [429] * (30 - quota)
    codes = {(await r.json())["error"]["code"] for r in responses if r.status == 429}
    assert codes == {"daily_quota_exceeded"}
    await first.flush()
    assert await usage_rows(db, key.key_id) == {today(): quota}


async def test_request_for_more_images_than_remain_consumes_nothing(
    gateway: Gateway, make_key: MakeKey, db
):
    key = await make_key("pro", images_per_day=5)
    assert (await gateway.generate(key.key, n=4)).status == 200
    refused = await gateway.generate(key.key, n=2)
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == "daily_quota_exceeded"
    assert error["param"] == "n"
    assert refused.headers["x-ratelimit-remaining-images"] == "1"
    last = await gateway.generate(key.key, n=1)
    assert last.status == 200
    assert last.headers["x-ratelimit-remaining-images"] == "0"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 5}


async def test_key_override_beats_plan(gateway: Gateway, make_key: MakeKey):
    key = await make_key("free", requests_per_minute=3, images_per_day=1000)
    response = await gateway.generate(key.key)
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert response.headers["x-ratelimit-limit-images"] == "1000"
    plain = await make_key("free")
    response = await gateway.generate(plain.key)
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    assert response.headers["x-ratelimit-limit-images"] == "50"


async def test_max_images_per_request_follows_the_plan(gateway: Gateway, make_key: MakeKey):
    pro = await make_key("pro")
    assert (await gateway.generate(pro.key, n=10)).status == 200
    free = await make_key("free")
    response = await gateway.generate(free.key, n=5)
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "n"


async def test_limits_are_per_key(gateway: Gateway, make_key: MakeKey):
    one = await make_key(requests_per_minute=1)
    two = await make_key(requests_per_minute=1)
    assert (await gateway.generate(one.key)).status == 200
    assert (await gateway.generate(one.key)).status == 429
    assert (await gateway.generate(two.key)).status == 200


class PinnedClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def test_rolling_window_never_admits_more_than_the_limit_in_any_minute(
    make_gateway: MakeGateway, make_key: MakeKey
):
    # A fixed-window limiter would admit 2x the limit around a minute boundary.
    start = 1_800_000_030.0  # mid-minute
    clock = PinnedClock(start)
    gateway = await make_gateway(limiter_clock=clock)
    key = await make_key("pro", requests_per_minute=3)
    for offset in (0, 20, 29):
        clock.now = start + offset
        assert (await gateway.generate(key.key)).status == 200
    clock.now = start + 31  # a new calendar minute, but only 31 s after the first
    refused = await gateway.generate(key.key)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "29"  # when the first leaves the window
    clock.now = start + 60  # the first request has left the window
    assert (await gateway.generate(key.key)).status == 200
    clock.now = start + 61
    assert (await gateway.generate(key.key)).status == 429
    clock.now = start + 80  # the second has left too
    assert (await gateway.generate(key.key)).status == 200


async def test_daily_quota_starts_afresh_at_utc_midnight(
    make_gateway: MakeGateway, make_key: MakeKey, db
):
    import datetime as dt

    midnight = dt.datetime(2027, 3, 1, tzinfo=dt.UTC).timestamp()
    clock = PinnedClock(midnight - 10)
    gateway = await make_gateway(limiter_clock=clock)
    key = await make_key("pro", images_per_day=2)
    assert (await gateway.generate(key.key, n=2)).status == 200
    refused = await gateway.generate(key.key)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "10"
    clock.now = midnight
    assert (await gateway.generate(key.key, n=2)).status == 200
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {
        dt.date(2027, 2, 28): 2,
        dt.date(2027, 3, 1): 2,
    }
