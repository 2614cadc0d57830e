"""Fixtures for the backend tests: the backends' HTTP clients and fake upstream servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from gateway.backends import h1
from gateway.backends.base import BackendContext
from gateway.egress.client import EgressClient
from gateway.egress.policy import EgressPolicy
from tests.support.providers import F, ProviderFake, Serve


@pytest.fixture
async def context() -> AsyncIterator[BackendContext]:
    """What the gateway lends a backend: its API client and its egress client, whose
    policy allows the fakes' address (127.0.0.1) as an operator would allow theirs."""
    api = h1.Client()
    egress = EgressClient(EgressPolicy.from_allow_list(["127.0.0.1"]))
    yield BackendContext(http=egress.session, api=api, egress=egress)
    await egress.close()
    await api.close()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(fake)`` runs a fake upstream on a real socket until the test ends."""
    running: list[tuple[ProviderFake, TestServer]] = []

    async def start(fake: F) -> F:
        server = TestServer(fake.app())
        await server.start_server()
        fake.origin = str(server.make_url("")).rstrip("/")
        running.append((fake, server))
        return fake

    yield start
    for fake, server in reversed(running):
        fake.release.set()  # hanging handlers finish, so the server closes at once
        await server.close()
