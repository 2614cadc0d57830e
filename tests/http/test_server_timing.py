"""``Server-Timing`` on generation, edit and variation answers (streamed ones too): the
gateway's own time and the upstream's, so a client sees what the gateway adds
(milliseconds, as the header's ``dur`` says)."""

from __future__ import annotations

import re

import aiohttp

from tests.support.gateway import MakeGateway, MakeKey
from tests.support.images import png
from tests.support.upstreams import FakeUpstream, upstream_config

BOTH = re.compile(r"gateway;dur=(\d+\.\d), upstream;dur=(\d+\.\d)")
GATEWAY_ONLY = re.compile(r"gateway;dur=\d+\.\d")


async def test_a_generation_says_what_the_gateway_and_the_upstream_took(
    make_app: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    app = await make_app(upstream_config(fake_upstream))
    key = await make_key()
    response = await app.generate(key.key, model="remote")
    assert response.status == 200
    match = BOTH.fullmatch(response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    assert float(match.group(2)) > 0


async def test_a_failed_upstream_is_timed_too_and_a_refusal_before_it_is_not(
    make_app: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    fake_upstream.mode = "fail"
    app = await make_app(upstream_config(fake_upstream, retries=0))
    key = await make_key()
    failed = await app.generate(key.key, model="remote")
    assert failed.status == 502
    assert BOTH.fullmatch(failed.headers["Server-Timing"]), failed.headers["Server-Timing"]

    refused = await app.generate("nb_test_not-a-key")
    assert refused.status == 401
    assert GATEWAY_ONLY.fullmatch(refused.headers["Server-Timing"])


async def test_other_routes_have_no_server_timing(make_app: MakeGateway):
    app = await make_app()
    response = await app.client.get("/healthz")
    assert response.status == 200
    assert "Server-Timing" not in response.headers


async def test_a_replayed_answer_says_only_what_the_gateway_took(
    make_app: MakeGateway, make_key: MakeKey
):
    app = await make_app()
    key = await make_key()
    headers = {"Authorization": f"Bearer {key.key}", "Idempotency-Key": "timing-1"}
    body = {"prompt": "p", "size": "256x256"}
    first = await app.client.post("/v1/images/generations", json=body, headers=headers)
    assert first.status == 200
    assert BOTH.fullmatch(first.headers["Server-Timing"])
    replay = await app.client.post("/v1/images/generations", json=body, headers=headers)
    assert replay.status == 200
    assert await replay.read() == await first.read()
    assert GATEWAY_ONLY.fullmatch(replay.headers["Server-Timing"])  # no upstream call made


async def test_an_edit_says_what_the_gateway_and_the_upstream_took(
    make_app: MakeGateway, make_key: MakeKey
):
    app = await make_app()
    key = await make_key()
    form = aiohttp.FormData()
    form.add_field("image", png(64, 64), filename="in.png", content_type="image/png")
    form.add_field("prompt", "a red door")
    form.add_field("size", "256x256")
    response = await app.client.post(
        "/v1/images/edits", data=form, headers={"Authorization": f"Bearer {key.key}"}
    )
    assert response.status == 200, await response.text()
    assert BOTH.fullmatch(response.headers["Server-Timing"]), response.headers["Server-Timing"]

    refused = await app.client.post(
        "/v1/images/edits", data=b"x", headers={"Authorization": "Bearer no"}
    )
    assert refused.status in (400, 401)
    assert GATEWAY_ONLY.fullmatch(refused.headers["Server-Timing"])


async def test_a_stream_says_what_took_until_its_first_event(
    make_app: MakeGateway, make_key: MakeKey
):
    app = await make_app()
    key = await make_key()
    generation = await app.generate(key.key, stream=True, partial_images=1)
    form = aiohttp.FormData()
    form.add_field("image", png(64, 64), filename="in.png", content_type="image/png")
    form.add_field("prompt", "a red door")
    form.add_field("size", "256x256")
    form.add_field("stream", "true")
    edit = await app.client.post(
        "/v1/images/edits", data=form, headers={"Authorization": f"Bearer {key.key}"}
    )
    for response in (generation, edit):
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        [timing] = response.headers.getall("Server-Timing")
        assert BOTH.fullmatch(timing), timing
        assert b"completed" in await response.read()
