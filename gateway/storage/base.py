"""The file store's contract: what the gateway asks of wherever output images live.

One implementation (:class:`~gateway.storage.object_store.ObjectFileStore`, over
``obstore``) serves every kind of store; this base says what any of them promises, and
``tests/storage/test_contract.py`` holds each of them to it.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO

__all__ = ["ByteRange", "FileBody", "FileInfo", "FileStore", "resolve_range"]


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the store knows of one file."""

    file_id: str
    content_type: str
    size: int
    last_modified: dt.datetime


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A requested byte range, as HTTP states it: ``first``-``last`` inclusive (``last``
    ``None``: to the end), or the final ``suffix`` bytes."""

    first: int | None = None
    last: int | None = None
    suffix: int | None = None


def resolve_range(requested: ByteRange | None, size: int) -> tuple[int, int] | None:
    """``requested`` on a file of ``size`` bytes as ``(start, stop)`` (stop exclusive);
    the whole file for ``None``; ``None`` if it selects no byte (HTTP 416)."""
    if requested is None:
        return 0, size
    if requested.suffix is not None:
        if requested.suffix <= 0 or size == 0:
            return None
        return max(0, size - requested.suffix), size
    first = requested.first or 0
    if first >= size:
        return None
    last = size - 1 if requested.last is None else min(requested.last, size - 1)
    return first, last + 1


class FileBody:
    """An opened file, or the part of it that was asked for: bytes ``start`` to ``stop``.

    :meth:`chunks` streams the bytes. Where the event loop can hand a file to the kernel
    (asyncio's own loop has ``sendfile``; uvloop has not), :attr:`file` is the open local
    file instead, to be sent from offset ``start``, ``length`` bytes. Always
    :meth:`close` it.
    """

    def __init__(
        self,
        info: FileInfo,
        start: int,
        stop: int,
        *,
        chunks: AsyncIterator[bytes],
        file: IO[bytes] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self.start = start
        self.stop = stop
        self.file = file
        self._chunks = chunks
        self._close = close

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def partial(self) -> bool:
        return (self.start, self.stop) != (0, self.info.size)

    def chunks(self) -> AsyncIterator[bytes]:
        """The bytes, a chunk at a time (once)."""
        return self._chunks

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


class FileStore(abc.ABC):
    """Where output images are kept: written once under a fresh unguessable id, read by
    id, deleted by id or when older than the retention.

    Every method raises :class:`~gateway.errors.StorageUnavailable` when the store cannot
    be reached or fails (after the store's own retries); reads of an id that is not
    there raise :class:`~gateway.errors.NotFound`. Files are immutable: an id always
    names the same bytes, so an id is also a strong ETag.
    """

    #: A name for logs and metrics (``file``, ``s3``, ``memory``, ...).
    kind: str = "store"

    @abc.abstractmethod
    async def put(self, data: bytes, content_type: str) -> FileInfo:
        """Store ``data`` under a new file id.

        Args:
            data: the file's bytes.
            content_type: its media type (``image/png``); an unknown one is stored and
                served as ``application/octet-stream``.

        Returns:
            The new file's info; ``file_id`` is what links name.
        """

    @abc.abstractmethod
    async def head(self, file_id: str) -> FileInfo:
        """The file's info without its bytes.

        Raises:
            NotFound: no such file (never stored, deleted, or swept).
        """

    @abc.abstractmethod
    async def open(self, file_id: str, byte_range: ByteRange | None = None) -> FileBody:
        """The file's bytes, or the part ``byte_range`` selects, ready to stream.

        Raises:
            NotFound: no such file.
            RangeNotSatisfiable: ``byte_range`` selects no byte of it.
        """

    @abc.abstractmethod
    async def delete(self, file_id: str) -> None:
        """Delete the file; deleting one that is not there is not an error."""

    @abc.abstractmethod
    def list_files(self) -> AsyncIterator[FileInfo]:
        """Every file in the store (objects that are not the gateway's are skipped)."""

    @abc.abstractmethod
    async def sweep(self, older_than: dt.datetime) -> int:
        """Delete every file last modified before ``older_than``.

        Returns:
            How many were deleted.
        """

    @abc.abstractmethod
    async def check_writable(self) -> None:
        """Write and delete a probe object: the start-up check.

        Raises:
            StorageUnavailable: the store cannot be written; the message says why.
        """

    async def presign(self, file_id: str, expires_in: dt.timedelta) -> str:
        """A URL at the store itself that reads the file for ``expires_in``.

        Raises:
            NotImplementedError: the store cannot presign (only S3 here).
        """
        raise NotImplementedError(f"a {self.kind} store cannot presign links")

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing to close
        """Release what the store holds."""
