"""Where output images are kept, and the signed, expiring links that serve them.

- ``config.py``: the ``storage:`` section (:class:`StorageConfig`, validated by
  :func:`parse_storage_config`).
- ``base.py``: the contract every store keeps (:class:`FileStore`).
- ``object_store.py``: the store over obstore (file, S3, GCS, Azure, memory).
- ``ids.py``: unguessable file ids that are their object paths.
- ``links.py``: signing and verifying links; building them for a request.
- ``sweeper.py``: deleting files past the retention.
- ``runtime.py``: the running storage (``app[STORAGE]``), its start-up and cleanup.

The HTTP edge that serves links is ``gateway/http/files.py``.
"""

from __future__ import annotations

from gateway.storage.base import ByteRange, FileBody, FileInfo, FileStore
from gateway.storage.config import StorageConfig, parse_storage_config
from gateway.storage.links import FILES_PATH, FileLink, FileLinks, LinkSigner
from gateway.storage.object_store import ObjectFileStore, open_store
from gateway.storage.runtime import STORAGE, SavedFile, Storage, open_storage, storage_context
from gateway.storage.sweeper import Sweeper

__all__ = [
    "FILES_PATH",
    "STORAGE",
    "ByteRange",
    "FileBody",
    "FileInfo",
    "FileLink",
    "FileLinks",
    "FileStore",
    "LinkSigner",
    "ObjectFileStore",
    "SavedFile",
    "Storage",
    "StorageConfig",
    "Sweeper",
    "open_storage",
    "open_store",
    "parse_storage_config",
    "storage_context",
]
