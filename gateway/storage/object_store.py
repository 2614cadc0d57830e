"""The file store over ``obstore``: local files, S3 and S3-compatible servers, GCS, Azure,
memory; one class, the store kind chosen by the URL (:func:`open_store`).

**Serving local files**: ``file://`` reads bypass obstore and are sent as aiohttp's
``FileResponse`` sends a file (the kernel's ``sendfile`` where the event loop has it, else
256 KiB reads in a worker thread, the first in the same trip as the open), because that is
what keeps serving a stored image at least as fast as ``web.static`` on the same disk.
Measured with ``python -m bench.files --duration 5 --runs 7 --loop both --together``
(1 MiB image, wrk -c32 per route, all routes loaded at once, on a shared 2-core machine):
this path served 1.10x ``web.static``'s requests per second under uvloop and 1.08x under
asyncio's loop (medians of run-by-run ratios), with 13-23% less CPU per request;
obstore's local ``get`` streamed through Python served 0.94x and 0.44x, at 3.5 to 9
times ``web.static``'s CPU per request. Writes, listing and deletes still go through
obstore (its local put writes a temporary file and renames it: a reader never sees half
a file). ``sendfile=False`` serves ``file://`` through obstore too (the comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import obstore
from obstore.store import LocalStore, MemoryStore, S3Store, from_url

from gateway import errors
from gateway.config import ConfigError
from gateway.metrics import Metrics
from gateway.storage.base import ByteRange, FileBody, FileInfo, FileStore, resolve_range
from gateway.storage.config import StorageConfig, store_options
from gateway.storage.ids import content_type_of, is_file_id, new_file_id

if TYPE_CHECKING:
    from obstore.store import ObjectStore as Backend

__all__ = ["FILE_CHUNK", "STREAM_CHUNK_BYTES", "ObjectFileStore", "open_store"]

log = logging.getLogger(__name__)

#: Chunks streamed from a remote store: big enough to amortize a write, small enough
#: that a multi-megabyte image is never held whole.
STREAM_CHUNK_BYTES = 256 * 1024
#: Bytes read from a local file at a time when it is streamed rather than sendfile'd
#: (aiohttp's ``FileResponse`` reads as much): the next read overlaps the last write.
FILE_CHUNK = 256 * 1024
#: obstore answers from tokio threads that may still drop Python objects just after a
#: call returns. If the interpreter is finalizing by then, Python 3.11 ends such a thread
#: with ``pthread_exit``, which aborts the process (SIGABRT at exit, seen in about 1 exit
#: in 10 right after a call); :meth:`ObjectFileStore.close` waits this long first.
_SETTLE_SECONDS = 0.05
_DELETE_BATCH = 500
#: Remote stores retry connection errors and 5xx a few times, quickly, then give up:
#: a link is served within seconds or not at all.
_RETRY = {
    "max_retries": 3,
    "retry_timeout": dt.timedelta(seconds=10),
    "backoff": {
        "init_backoff": dt.timedelta(milliseconds=100),
        "max_backoff": dt.timedelta(seconds=2),
        "base": 2,
    },
}
_CLIENT_DEFAULTS = {"timeout": "30s", "connect_timeout": "5s"}
_KINDS = {"s3": "s3", "s3a": "s3", "gs": "gcs"}


class ObjectFileStore(FileStore):
    """:class:`FileStore` over one obstore store; ``local_root`` is the directory of a
    ``file://`` store (its files are read with ``sendfile`` unless ``sendfile=False``)."""

    def __init__(
        self,
        backend: Backend,
        *,
        kind: str,
        describe: str,
        local_root: Path | None = None,
        metrics: Metrics | None = None,
        sendfile: bool = True,
    ) -> None:
        self._backend = backend
        self.kind = kind
        self._describe = describe
        self._local_root = local_root if sendfile else None
        self._metrics = metrics
        # The local store keeps no per-object attributes; the others get the content
        # type, so a presigned link is served with it.
        self._attributes = not isinstance(backend, LocalStore)

    # -- the contract ------------------------------------------------------------------

    async def put(self, data: bytes, content_type: str) -> FileInfo:
        file_id = new_file_id(content_type)
        media = content_type_of(file_id)
        attributes = cast(Any, {"Content-Type": media}) if self._attributes else None
        with self._operation("put"):
            await obstore.put_async(
                self._backend, file_id, data, attributes=attributes, use_multipart=False
            )
        if self._metrics is not None:
            self._metrics.storage_bytes(len(data))
        return FileInfo(file_id, media, len(data), dt.datetime.now(dt.UTC))

    async def head(self, file_id: str) -> FileInfo:
        _known(file_id)
        if self._local_root is not None:
            with self._operation("head"):
                st = await asyncio.to_thread(os.stat, self._local_root / file_id)
            return _local_info(file_id, st)
        with self._operation("head"):
            meta = await obstore.head_async(self._backend, file_id)
        return _info(file_id, meta)

    async def open(self, file_id: str, byte_range: ByteRange | None = None) -> FileBody:
        _known(file_id)
        if self._local_root is not None:
            return await self._open_local(file_id, byte_range)
        if byte_range is None:
            with self._operation("get"):
                result = await obstore.get_async(self._backend, file_id)
            info = _info(file_id, result.meta)
            return FileBody(info, 0, info.size, chunks=self._stream(result))
        info = await self.head(file_id)
        span = resolve_range(byte_range, info.size)
        if span is None:
            raise errors.RangeNotSatisfiable(info.size)
        with self._operation("get"):
            result = await obstore.get_async(self._backend, file_id, options={"range": span})
        return FileBody(info, span[0], span[1], chunks=self._stream(result))

    async def delete(self, file_id: str) -> None:
        if not is_file_id(file_id):
            return
        with contextlib.suppress(errors.NotFound), self._operation("delete"):
            await obstore.delete_async(self._backend, file_id)

    async def list_files(self) -> AsyncIterator[FileInfo]:
        with self._operation("list"):
            async for chunk in obstore.list(self._backend, chunk_size=1000):
                for meta in chunk:
                    name = meta["path"]
                    if is_file_id(name):
                        yield _info(name, meta)

    async def sweep(self, older_than: dt.datetime) -> int:
        doomed = [
            info.file_id async for info in self.list_files() if info.last_modified < older_than
        ]
        deleted = 0
        for i in range(0, len(doomed), _DELETE_BATCH):
            deleted += await self._delete_many(doomed[i : i + _DELETE_BATCH])
        if self._metrics is not None and deleted:
            self._metrics.storage_swept(deleted)
        return deleted

    async def check_writable(self) -> None:
        probe = f".probe-{secrets.token_hex(8)}"
        try:
            await obstore.put_async(self._backend, probe, b"probe", use_multipart=False)
            await obstore.delete_async(self._backend, probe)
        except Exception as exc:
            raise errors.StorageUnavailable(
                f"The file store {self._describe} is not writable "
                f"(writing and deleting a probe object failed): {_first_line(exc)}"
            ) from None

    async def close(self) -> None:
        await asyncio.sleep(_SETTLE_SECONDS)

    async def presign(self, file_id: str, expires_in: dt.timedelta) -> str:
        if not isinstance(self._backend, S3Store):
            return await super().presign(file_id, expires_in)
        with self._operation("sign"):
            return await obstore.sign_async(self._backend, "GET", file_id, expires_in)

    # -- helpers -------------------------------------------------------------------------

    async def _open_local(self, file_id: str, byte_range: ByteRange | None) -> FileBody:
        assert self._local_root is not None
        # One trip to a worker thread opens the file and, where it will not be handed to
        # sendfile (uvloop has none), reads its first chunk too.
        sendfile = isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)
        with self._operation("get"):
            opened = await asyncio.to_thread(
                _open_file, self._local_root / file_id, byte_range, 0 if sendfile else FILE_CHUNK
            )
        file, st, span, first = opened
        info = _local_info(file_id, st)
        if span is None:
            raise errors.RangeNotSatisfiable(info.size)
        start, stop = span
        return FileBody(
            info,
            start,
            stop,
            chunks=_file_chunks(file, start + len(first), stop, first),
            file=file if sendfile else None,
            close=file.close,
        )

    async def _stream(self, result: obstore.GetResult) -> AsyncIterator[bytes]:
        with self._operation("stream"):
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK_BYTES):
                yield chunk

    async def _delete_many(self, file_ids: list[str]) -> int:
        try:
            with self._operation("delete"):
                await obstore.delete_async(self._backend, file_ids)
            return len(file_ids)
        except errors.NotFound:
            pass  # another process swept some of them first (the local store says so)
        deleted = 0
        for file_id in file_ids:
            try:
                with self._operation("delete"):
                    await obstore.delete_async(self._backend, file_id)
                deleted += 1
            except errors.NotFound:
                pass
        return deleted

    @contextlib.contextmanager
    def _operation(self, op: str) -> Iterator[None]:
        """Time and count one store call; obstore's errors become the domain's."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except FileNotFoundError:
            outcome = "not_found"
            raise errors.NotFound("The file does not exist or has been deleted.") from None
        except errors.GatewayError:
            outcome = "error"
            raise
        except Exception as exc:
            outcome = "error"
            log.warning(
                "file store %s failed on %s: %s: %s",
                self._describe,
                op,
                type(exc).__name__,
                _first_line(exc),
            )
            raise errors.StorageUnavailable() from None
        finally:
            if self._metrics is not None:
                self._metrics.storage_operation(op, outcome, time.perf_counter() - started)


def open_store(
    config: StorageConfig,
    environ: Mapping[str, str],
    *,
    metrics: Metrics | None = None,
    sendfile: bool = True,
) -> ObjectFileStore:
    """The store ``config.url`` names (a ``file://`` directory is created if missing).

    Raises:
        ConfigError: an option the store does not know, or a missing ``*_env`` variable.
        StorageUnavailable: the ``file://`` directory cannot be created.
    """
    scheme = config.scheme
    describe = _redacted(config.url)
    if scheme == "memory":
        return ObjectFileStore(MemoryStore(), kind="memory", describe=describe, metrics=metrics)
    if scheme == "file":
        root = Path(config.url.split("://", 1)[1]).expanduser().absolute()
        try:
            root.mkdir(parents=True, exist_ok=True)
            backend: Backend = LocalStore(root)
        except Exception as exc:
            raise errors.StorageUnavailable(
                f"The file store {describe} is not writable: cannot create {root}: "
                f"{_first_line(exc)}"
            ) from None
        return ObjectFileStore(
            backend,
            kind="file",
            describe=describe,
            local_root=root,
            metrics=metrics,
            sendfile=sendfile,
        )
    options = store_options(config.options, environ)
    client = {**_CLIENT_DEFAULTS, **options.pop("client_options", {})}
    if str(options.get("endpoint", "")).startswith("http://"):
        client.setdefault("allow_http", True)
    try:
        backend = cast(Any, from_url)(
            config.url, client_options=client, retry_config=_RETRY, **options
        )
    except Exception as exc:
        raise ConfigError(f"storage.options: {_first_line(exc)}") from None
    return ObjectFileStore(
        backend, kind=_KINDS.get(scheme, "azure"), describe=describe, metrics=metrics
    )


def _known(file_id: str) -> None:
    if not is_file_id(file_id):
        raise errors.NotFound("The file does not exist or has been deleted.")


def _open_file(
    path: Path, byte_range: ByteRange | None, read_ahead: int
) -> tuple[IO[bytes], os.stat_result, tuple[int, int] | None, bytes]:
    """Open ``path``; its stat, the span ``byte_range`` selects (``None``: nothing, and
    the file is closed) and up to ``read_ahead`` bytes from the span's start."""
    file = path.open("rb")
    try:
        st = os.fstat(file.fileno())
        span = resolve_range(byte_range, st.st_size)
        if span is None:
            file.close()
            return file, st, None, b""
        first = b""
        if read_ahead:
            file.seek(span[0])
            first = file.read(min(read_ahead, span[1] - span[0]))
        return file, st, span, first
    except BaseException:
        file.close()
        raise


async def _file_chunks(
    file: IO[bytes], offset: int, stop: int, first: bytes
) -> AsyncIterator[bytes]:
    """``first``, then the file's bytes from ``offset`` to ``stop``, each chunk read in a
    worker thread (a disk read never blocks the event loop)."""
    if first:
        yield first
    while offset < stop:
        chunk = await asyncio.to_thread(_read_at, file, offset, min(stop - offset, FILE_CHUNK))
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def _read_at(file: IO[bytes], offset: int, size: int) -> bytes:
    file.seek(offset)
    return file.read(size)


def _local_info(file_id: str, st: os.stat_result) -> FileInfo:
    modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)
    return FileInfo(file_id, content_type_of(file_id), st.st_size, modified)


def _info(file_id: str, meta: obstore.ObjectMeta) -> FileInfo:
    return FileInfo(file_id, content_type_of(file_id), meta["size"], meta["last_modified"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redacted(url: str) -> str:
    """``url`` without any user info (``s3://key:secret@bucket`` is never logged)."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
