"""Deletes stored files past the retention, every so often, in every process.

Listing by last-modified time works on every store (a local directory, S3, GCS, Azure,
memory). On S3 a bucket lifecycle rule does the same job without listing (see the
README); then set ``storage.retention_hours: 0`` and the gateway does not sweep. Several
processes sweeping the same store is harmless: deleting a deleted file is not an error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from gateway.storage.base import FileStore

__all__ = ["Sweeper", "sweep_interval"]

log = logging.getLogger(__name__)


def sweep_interval(retention_hours: float) -> float:
    """Seconds between sweeps: a twelfth of the retention, from a minute to an hour."""
    return min(3600.0, max(60.0, retention_hours * 3600 / 12))


class Sweeper:
    """Args:
    store: the store to sweep.
    retention_hours: files older than this are deleted.
    clock: wall-clock seconds since the epoch (tests pin it).
    interval: seconds between sweeps (default :func:`sweep_interval`).
    """

    def __init__(
        self,
        store: FileStore,
        *,
        retention_hours: float,
        clock: Callable[[], float],
        interval: float | None = None,
    ) -> None:
        self._store = store
        self._retention = dt.timedelta(hours=retention_hours)
        self._clock = clock
        self.interval = interval if interval is not None else sweep_interval(retention_hours)

    async def sweep(self) -> int:
        """Delete what is past the retention now; how many files that was."""
        cutoff = dt.datetime.fromtimestamp(self._clock(), dt.UTC) - self._retention
        return await self._store.sweep(cutoff)

    async def run(self) -> None:
        """Sweep, then every :attr:`interval` seconds, until cancelled; a failed sweep
        is logged and tried again at the next interval."""
        while True:
            try:
                swept = await self.sweep()
                if swept:
                    log.info("swept %d stored files past the retention", swept)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sweeping the file store failed: %s", exc)
            await asyncio.sleep(self.interval)
