"""Fixtures for the backend tests: the backends' HTTP clients and fake upstream servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.backends import h1
from gateway.backends.base import BackendContext
from tests.support.providers import F, ProviderFake, Serve


@pytest.fixture
async def context() -> AsyncIterator[BackendContext]:
    """What the gateway lends a backend: its API client and its download session."""
    api = h1.Client()
    async with aiohttp.ClientSession() as session:
        yield BackendContext(http=session, api=api)
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
