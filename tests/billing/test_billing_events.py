"""Usage and credit events POSTed to ``billing.events_url`` as CloudEvents, none lost."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.billing.events import CONTENT_TYPE
from tests.support.credits import CREDITS, grant
from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.waiting import eventually


@dataclass
class Receiver:
    """A billing system: answers ``statuses`` in turn (then 202), keeps every batch."""

    statuses: list[int] = field(default_factory=list)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    taken: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        batch = json.loads(await request.read())
        self.batches.append(batch)
        self.content_types.append(request.headers.get("Content-Type", ""))
        status = self.statuses.pop(0) if self.statuses else 202
        if 200 <= status < 300:
            self.taken.extend(batch)
        return web.Response(status=status)

    def of(self, user_id: object, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.taken if e["subject"] == str(user_id) and e["type"] == type_]


async def _serve(receiver: Receiver, port: int = 0) -> TestServer:
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return server


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    found = Receiver()
    server = await _serve(found)
    yield found, f"http://127.0.0.1:{server.port}/events"
    await server.close()


def _billing(url: str, **extra: Any) -> dict[str, Any]:
    return {
        **CREDITS,
        "egress": {"allow": ["127.0.0.1"]},
        "billing": {
            "events_url": url,
            "interval_seconds": 0.05,
            "max_backoff_seconds": 0.1,
            **extra,
        },
    }


async def _images(gateway: Gateway, key: str, count: int) -> None:
    for _ in range(count):
        response = await gateway.generate(key, size="256x256")
        assert response.status == 200, await response.text()
    await gateway.flush()


async def test_delivered_images_are_sent_as_cloudevents(
    make_gateway: MakeGateway, make_key: MakeKey, receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    gateway = await make_gateway(_billing(url))
    key = await make_key("metered")

    await _images(gateway, key.key, 2)
    await _images(gateway, key.key, 1)

    async def three() -> object:
        sent = found.of(key.user_id, "gateway.usage.images")
        return sum(e["data"]["images"] for e in sent) == 3 or sent

    await eventually(three, timeout=10)
    usage = found.of(key.user_id, "gateway.usage.images")
    assert {e["data"]["api_key_id"] for e in usage} == {str(key.key_id)}
    assert usage[-1]["data"]["images_that_day"] == 3
    assert {(e["data"]["model"], e["data"]["backend"]) for e in usage} == {("local", "local")}
    event = usage[0]
    assert event["specversion"] == "1.0"
    assert event["source"] == "image-gateway"
    assert event["datacontenttype"] == "application/json"
    assert event["time"].endswith("Z")
    assert set(found.content_types) == {CONTENT_TYPE}

    # Each credit charge is an event too (3 images at 1 credit each).
    async def charged() -> object:
        charges = found.of(key.user_id, "gateway.credits.charge")
        return sum(-e["data"]["credits"] for e in charges) == 3 or charges

    await eventually(charged, timeout=10)


async def test_a_refused_batch_is_sent_again_with_the_same_ids(
    make_gateway: MakeGateway, make_key: MakeKey, receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    found.statuses = [500, 503]
    gateway = await make_gateway(_billing(url))
    key = await make_key("metered")

    await _images(gateway, key.key, 2)

    async def two() -> object:
        sent = found.of(key.user_id, "gateway.usage.images")
        return sum(e["data"]["images"] for e in sent) == 2 or sent

    await eventually(two, timeout=10)
    refused = [e for batch in found.batches[:2] for e in batch]

    async def all_again() -> object:
        taken = {e["id"] for e in found.taken}
        missing = [e["id"] for e in refused if e["id"] not in taken]
        return missing if missing else True

    await eventually(all_again, timeout=10)
    taken_ids = {e["id"]: e for e in found.taken}
    for event in refused:  # every refused event came again, the same
        assert taken_ids[event["id"]] == event
    assert len(taken_ids) == len(found.taken)  # and was taken once


async def test_events_wait_while_the_receiver_is_down(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
) -> None:
    with socket.socket() as probe:  # a port with nobody listening, yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = await make_gateway(_billing(f"http://127.0.0.1:{port}/events"))
    key = await make_key("metered")
    await _images(gateway, key.key, 2)

    async def tried() -> object:
        attempts = await db.fetchval(
            "SELECT max(attempts) FROM billing_events WHERE user_id = $1", key.user_id
        )
        return (attempts or 0) >= 2 or attempts

    await eventually(tried, timeout=10)
    found = Receiver()
    server = await _serve(found, port)
    try:

        async def all_taken() -> object:
            sent = found.of(key.user_id, "gateway.usage.images")
            return sum(e["data"]["images"] for e in sent) == 2 or sent

        await eventually(all_taken, timeout=10)
    finally:
        await server.close()

    async def none_left() -> object:
        left = await db.fetchval(
            "SELECT count(*) FROM billing_events WHERE user_id = $1", key.user_id
        )
        return left == 0 or left

    await eventually(none_left, timeout=10)


async def test_a_grant_is_an_event(
    make_gateway: MakeGateway, make_key: MakeKey, receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    gateway = await make_gateway(_billing(url))
    key = await make_key("metered")

    response = await grant(gateway, key.user_id, 25, reason="a purchase")
    assert response.status == 200, await response.text()
    await gateway.flush()

    async def granted() -> object:
        return len(found.of(key.user_id, "gateway.credits.grant")) == 1 or found.taken

    await eventually(granted, timeout=10)
    (event,) = found.of(key.user_id, "gateway.credits.grant")
    assert event["data"]["credits"] == 25
    assert event["data"]["reason"] == "a purchase"


async def test_without_an_events_url_no_event_is_kept(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
) -> None:
    gateway = await make_gateway(CREDITS)
    key = await make_key("metered")

    await _images(gateway, key.key, 2)

    assert await db.fetchval("SELECT count(*) FROM usage WHERE api_key_id = $1", key.key_id) == 1
    kept = await db.fetchval("SELECT count(*) FROM billing_events WHERE user_id = $1", key.user_id)
    assert kept == 0
