"""Helpers for the gateway's long-running background tasks."""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled"]


def raise_if_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` if the current task was cancelled.

    redis-py sometimes absorbs a cancellation that lands inside a read or a connect
    (the read then simply goes on, or fails as a connection error), so a loop that
    must stop on cancel checks this after every Redis call and in its error handler.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
