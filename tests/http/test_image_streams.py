"""``stream: true``: partial images as Server-Sent Events, made by the local backend or
passed on from an upstream that streams, and only completed images charged."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.providers import decode_png
from tests.support.streams import read_events
from tests.support.upstreams import FakeUpstream, serve_fake_upstream, upstream_config
from tests.support.usage import today, usage_rows


@pytest.fixture
async def cancelling_upstream() -> AsyncIterator[FakeUpstream]:
    """A fake upstream whose handlers are cancelled when the gateway leaves."""
    async with serve_fake_upstream(handler_cancellation=True) as upstream:
        yield upstream


async def test_local_streams_partials_then_the_final_image(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key()
    response = await gateway.generate(key.key, n=2, stream=True, partial_images=2, seed=7)
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    assert response.headers["X-Request-ID"]
    assert response.headers["X-Gateway-Backend"] == "local"
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    events = await read_events(response)

    assert [(name, data.get("partial_image_index")) for name, data in events] == [
        ("image_generation.partial_image", 0),
        ("image_generation.partial_image", 1),
        ("image_generation.completed", None),
        ("image_generation.partial_image", 0),
        ("image_generation.partial_image", 1),
        ("image_generation.completed", None),
    ]
    for name, data in events:
        assert data["type"] == name
        assert decode_png(base64.b64decode(data["b64_json"])) == (256, 256)
        assert (data["size"], data["output_format"], data["quality"]) == ("256x256", "png", "auto")
        assert data["background"] == "auto"
        assert isinstance(data["created_at"], int)
    completed = [data for name, data in events if name == "image_generation.completed"]
    assert [c["usage"]["images"] for c in completed] == [1, 1]

    whole = await (await gateway.generate(key.key, n=2, seed=7)).json()
    assert [c["b64_json"] for c in completed] == [d["b64_json"] for d in whole["data"]]
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 4}


async def test_partial_images_zero_sends_only_the_final_images(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    events = await read_events(await gateway.generate(key.key, stream=True))
    assert [name for name, _ in events] == ["image_generation.completed"]


async def test_an_upstreams_stream_is_passed_on(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    response = await gateway.generate(
        key.key, model="remote", stream=True, partial_images=1, output_format="webp"
    )
    assert response.status == 200
    events = await read_events(response)

    sent = fake_upstream.requests[0]["body"]
    assert (sent["stream"], sent["partial_images"]) == (True, 1)
    assert [name for name, _ in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    final = events[-1][1]
    assert final["output_format"] == "webp"
    assert base64.b64decode(final["b64_json"])[8:12] == b"WEBP"
    assert final["usage"] == {
        "images": 1,
        "input_tokens": 50,
        "output_tokens": 50,
        "total_tokens": 100,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
    }
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 1}


async def test_a_failure_before_the_first_event_is_a_json_error_and_free(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db
):
    fake_upstream.mode = "fail"
    gateway = await make_gateway(upstream_config(fake_upstream, retries=0))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote", stream=True)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_error"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})


async def test_a_failure_mid_stream_is_an_error_event_and_only_completed_images_count(
    make_gateway: MakeGateway, make_key: MakeKey, cancelling_upstream: FakeUpstream, db
):
    cancelling_upstream.mode = "stream_hang"  # the second image never comes
    gateway = await make_gateway(upstream_config(cancelling_upstream, timeout=0.5))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote", n=2, stream=True)
    assert response.status == 200
    events = await read_events(response)

    assert [name for name, _ in events] == ["image_generation.completed", "error"]
    assert events[-1][1]["error"]["code"] == "upstream_timeout"
    await cancelling_upstream.stream_closed.wait()  # the upstream call was closed
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 1}


async def test_a_stream_with_links_is_refused(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    await expect_error(
        await gateway.generate(key.key, stream=True, response_format="url"),
        400,
        "invalid_request",
        "response_format",
    )


async def test_a_stream_keeps_max_n_per_call(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    config = upstream_config(fake_upstream)
    config["backends"]["remote"]["max_n_per_call"] = 1
    gateway = await make_gateway(config)
    key = await make_key()
    response = await gateway.generate(key.key, model="remote", n=2, stream=True, seed=5)
    events = await read_events(response)
    assert [name for name, _ in events] == ["image_generation.completed"] * 2
    assert [r["body"]["n"] for r in fake_upstream.requests] == [1, 1]
    assert [r["body"]["seed"] for r in fake_upstream.requests] == [5, 6]


async def test_a_stream_of_partial_images_only_ends_with_an_error_and_is_free(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream, db
):
    fake_upstream.mode = "stream_partials_only"
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote", stream=True, partial_images=2)
    events = await read_events(response)

    assert [name for name, _ in events] == ["image_generation.partial_image"] * 2 + ["error"]
    assert events[-1][1]["error"]["code"] == "upstream_error"
    await gateway.flush()
    assert await usage_rows(db, key.key_id) in ({}, {today(): 0})
