"""Waiting for something to come true, within a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["eventually", "within_a_second"]


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 3.0) -> float:
    """Poll ``check`` until it returns True; the seconds that took.

    Fails with its last answer after ``timeout`` seconds.
    """
    started = time.monotonic()
    while True:
        outcome = await check()
        if outcome is True:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"not observed within {timeout} s; last: {outcome!r}")
        await asyncio.sleep(0.02)


async def within_a_second(*checks: Callable[[], Awaitable[object]]) -> None:
    """Wait for every check; all of them must have come true within 1 s of the call."""
    started = time.monotonic()
    for check in checks:
        await eventually(check)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the change took {elapsed:.2f} s to be seen"
