"""A stream's credits: its ``n`` images reserved at admission, each charged as its
completed event goes out, the rest given back when the stream ends, however it ends."""

from __future__ import annotations

from typing import Any

from tests.support.config import merge
from tests.support.credits import CREDITS, ledger_rows, remaining
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.streams import read_events
from tests.support.upstreams import serve_fake_upstream, upstream_config


async def test_a_stream_is_charged_the_images_it_completed(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    async with serve_fake_upstream(handler_cancellation=True) as upstream:
        upstream.mode = "stream_hang"  # the second image never comes
        config = merge(CREDITS, upstream_config(upstream, timeout=0.5))
        config = merge(config, {"pricing": {"models": {"remote": {"credits_per_image": 2}}}})
        gateway = await make_gateway(config)
        key = await make_key("metered")

        whole = await gateway.generate(key.key, size="512x512", n=2, stream=True)
        assert whole.status == 200, await whole.text()
        assert remaining(whole) == 4  # 10 - 2 images * 3, reserved
        events = [name for name, _ in await read_events(whole)]
        assert events == ["image_generation.completed"] * 2

        broken = await gateway.generate(key.key, model="remote", n=2, stream=True)
        assert broken.status == 200, await broken.text()
        assert remaining(broken) == 0  # 4 - 2 images * 2, reserved
        events = [name for name, _ in await read_events(broken)]
        assert events == ["image_generation.completed", "error"]
        upstream.release.set()

        after = await gateway.generate(key.key, model="remote")
        assert after.status == 200, await after.text()
        assert remaining(after) == 0  # the image not completed was given back, then spent
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [
        ("monthly_reset", 10),
        ("charge", -6),
        ("charge", -4),
        ("refund", 2),
        ("charge", -2),
    ]
