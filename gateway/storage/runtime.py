"""The file store as a running gateway holds it: opened and checked at start-up, swept in
the background, reached by the HTTP edge through ``app[STORAGE]``.

Wiring (in ``create_app``)::

    app.cleanup_ctx.append(storage_context(config.storage, metrics=metrics, dev=dev,
                                           trusted_proxies=config.auth.trusted_proxies))
    app.router.add_get(FILES_ROUTE, serve_file)          # gateway.http.files

and where an image is answered with ``response_format: "url"``::

    saved = await request.app[STORAGE].save(image.data, image.media_type, request=request)
    {"url": saved.url, ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway import errors
from gateway.config import ConfigError
from gateway.metrics import Metrics
from gateway.storage.base import FileStore
from gateway.storage.config import StorageConfig, signing_secrets
from gateway.storage.links import FileLinks, LinkSigner
from gateway.storage.object_store import open_store
from gateway.storage.sweeper import Sweeper

__all__ = ["STORAGE", "SavedFile", "Storage", "open_storage", "storage_context"]


@dataclass(frozen=True, slots=True)
class SavedFile:
    """A file just stored, and the link a client gets for it."""

    file_id: str
    content_type: str
    size: int
    url: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Storage:
    """The store, its links and the clock they share (``app[STORAGE]``)."""

    config: StorageConfig
    store: FileStore
    links: FileLinks
    #: Wall-clock seconds since the epoch (tests pin it).
    clock: Callable[[], float]

    async def save(
        self, data: bytes, content_type: str, *, request: web.Request | None = None
    ) -> SavedFile:
        """Store ``data`` and link to it.

        Args:
            data: the file's bytes.
            content_type: its media type (``image/png``).
            request: the request being answered: its scheme and host make the link's
                base when ``storage.public_base_url`` is empty.

        Raises:
            StorageUnavailable: the store failed; nothing was stored.
        """
        info = await self.store.put(data, content_type)
        link = await self.links.link(info.file_id, now=self.clock(), request=request)
        return SavedFile(info.file_id, info.content_type, info.size, link.url, link.expires_at)


async def open_storage(
    config: StorageConfig,
    *,
    metrics: Metrics | None = None,
    environ: Mapping[str, str] = os.environ,
    dev: bool = False,
    clock: Callable[[], float] = time.time,
    trusted_proxies: Sequence[str] = (),
    sendfile: bool = True,
    derive_from: Sequence[str] = (),
) -> Storage:
    """Open the store and check it can be written (a probe object is written and deleted).

    Raises:
        ConfigError: no signing secret (outside ``dev``), a bad store option, or a store
            that cannot be written (``storage.url: ... is not writable ...: <why>``).
    """
    secrets = signing_secrets(config, dev=dev, derive_from=derive_from)
    try:
        store = open_store(config, environ, metrics=metrics, sendfile=sendfile)
        await store.check_writable()
    except errors.StorageUnavailable as exc:
        raise ConfigError(f"storage.url: {exc.message}") from None
    links = FileLinks(
        LinkSigner(secrets),
        ttl_seconds=config.url_ttl_seconds,
        public_base_url=config.public_base_url,
        trusted_proxies=trusted_proxies,
        store=store,
        presign=config.presign,
    )
    return Storage(config=config, store=store, links=links, clock=clock)


def storage_context(
    config: StorageConfig,
    *,
    metrics: Metrics | None = None,
    environ: Mapping[str, str] = os.environ,
    dev: bool = False,
    clock: Callable[[], float] = time.time,
    trusted_proxies: Sequence[str] = (),
    sweep_interval: float | None = None,
    derive_from: Sequence[str] = (),
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: opens the storage into ``app[STORAGE]`` when the app
    starts, runs the sweeper while it runs (unless ``storage.retention_hours`` is 0),
    and closes the store when it stops. The signing secrets are checked at once
    (``derive_from``: the account-token secrets, when the section names none).
    """
    if not dev:
        signing_secrets(config, dev=False, derive_from=derive_from)  # fail now, not at start

    async def context(app: web.Application) -> AsyncIterator[None]:
        storage = await open_storage(
            config,
            metrics=metrics,
            environ=environ,
            dev=dev,
            clock=clock,
            trusted_proxies=trusted_proxies,
            derive_from=derive_from,
        )
        app[STORAGE] = storage
        task = None
        if config.retention_hours:
            sweeper = Sweeper(
                storage.store,
                retention_hours=config.retention_hours,
                clock=clock,
                interval=sweep_interval,
            )
            task = asyncio.create_task(sweeper.run(), name="file-sweeper")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await storage.store.close()

    return context


STORAGE = web.AppKey("storage", Storage)
