"""Fixtures of the console's tests: console users, each with a cookie jar of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.console import ConsoleUser
from tests.support.gateway import Gateway


@pytest.fixture
async def console_user() -> AsyncIterator[Callable[[Gateway], ConsoleUser]]:
    users: list[ConsoleUser] = []

    def make(gateway: Gateway) -> ConsoleUser:
        users.append(ConsoleUser(gateway))
        return users[-1]

    yield make
    for user in users:
        await user.close()
