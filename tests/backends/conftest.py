"""Fixtures for the backend tests: the backends' HTTP clients and fake upstream servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.backends import h1
from gateway.backends.base import BackendContext
from tests.backends.fakes import FakeUpstream

F = TypeVar("F", bound=FakeUpstream)


class Serve(Protocol):
    async def __call__(self, fake: F) -> F: ...


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
    running: list[tuple[FakeUpstream, TestServer]] = []

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
