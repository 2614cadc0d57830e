"""The reservation journal: what a process admitted and has not yet delivered.

Admission charges a request's images in Redis *before* the upstream call. If the
process then dies (SIGKILL, OOM kill, a crash), those images were charged but never
delivered, and nothing in Redis says so. The journal does: each process keeps a small
memory-mapped file with one slot per request in flight. A slot is written before the
admission script is sent, marked admitted when its reply arrives, and freed just
before the response's bytes are handed to the kernel (or when the reservation is
released after a failed upstream call). No Redis round trip is added: these are
writes to shared memory, and they survive the process, because the kernel keeps a
``MAP_SHARED`` mapping's pages in the file's page cache.

Every process holds an exclusive ``flock`` on its own journal; the kernel drops it when
the process dies, however it dies. Any other gateway process using the same journal
directory (every flush interval) takes the lock of a journal nobody holds, gives back
the images of each slot still in use (``settle.lua``: a slot admitted for sure, or one
whose admission is found in the key's rolling-window log), and deletes the file.

Each slot change is a plain store into the mapping, and the state byte is written last,
so a process killed mid-write leaves either the old state or a complete new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import stat
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio.connection import parse_url

from gateway.config.urls import cluster_nodes

__all__ = [
    "ADMITTED",
    "ADMITTING",
    "FREE",
    "NO_SLOT",
    "Journal",
    "Orphan",
    "Reservation",
    "default_directory",
    "orphans",
]

log = logging.getLogger(__name__)

FREE, ADMITTING, ADMITTED = 0, 1, 2
#: Returned by :meth:`Journal.begin` when the journal is closed or every slot is in use.
NO_SLOT = -1

_MAGIC = b"GWJ4"
#: Journals of the previous layout (no usage label) are still settled.
_MAGIC_V3 = b"GWJ3"
#: magic, number of slots, the boot it was written in (a journal from before a reboot
#: may hold pages that never reached the disk: it is discarded, never settled)
_HEADER_FIELDS = struct.Struct("<4sI36s")
_HEADER = 64
#: state, 3 pad bytes, images, UTC day (-1 = unknown yet), key id, the log member, the
#: user id (the Redis shard), credits per image, credits taken from the purchased ones
#: (-1 = unknown yet), the month they were taken in (-1 = unknown yet), the label the
#: images are counted under (see gateway.usage.labels)
_SLOT = struct.Struct("<BxxxIi40s40s40sIii128s")
_SLOT_V3 = struct.Struct("<BxxxIi40s40s40sIii")
_COUNT_OFFSET = 4
_DAY_OFFSET = 8
_CREDITS_OFFSET = 8 + 4 + 40 + 40 + 40 + 4
_DAY = struct.Struct("<i")
_CREDITS = struct.Struct("<ii")
_COUNT = struct.Struct("<I")
_TEXT = 40
_SUFFIX = ".journal"
_CREATION_GRACE_S = 60.0


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(36)
    except OSError:  # not Linux: no reboot check
        return b""


def default_directory(redis_url: str, key_prefix: str) -> Path:
    """A directory shared by the processes that use this Redis and key prefix.

    Two gateways with different Redis data must not settle each other's journals, so
    the name is derived from where the data lives (the URL without its password).
    """
    if "+cluster://" in redis_url[:16]:  # a cluster: the nodes it names, in any order
        hosts = sorted(
            f"{str(o.get('host')).lower()}:{o.get('port')}"
            for o in map(parse_url, cluster_nodes(redis_url))
        )
        name = hashlib.sha256(f"cluster:{','.join(hosts)}\0{key_prefix}".encode()).hexdigest()
        return Path(tempfile.gettempdir()) / "image-gateway-journal" / name[:16]
    options = parse_url(redis_url)  # as redis-py reads it: no spelling makes a difference
    if "path" in options:
        where = f"unix:{options['path']}"
    else:
        where = f"{str(options.get('host', 'localhost')).lower()}:{options.get('port', 6379)}"
    where += f"/{options.get('db', 0)}"
    digest = hashlib.sha256(f"{where}\0{key_prefix}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "image-gateway-journal" / digest


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot still in use in a dead process's journal."""

    state: int
    images: int
    #: The UTC day of the admission, or -1 when the process died awaiting the reply.
    day: int
    key_id: str
    member: str
    user_id: str = ""
    #: Credits per image (0: none reserved).
    price: int = 0
    #: Credits taken from the purchased ones (-1: unknown, the reply never came).
    purchased: int = -1
    #: The month the credits were taken in (-1: unknown).
    month: int = -1
    #: The label its images are counted under (model and backend).
    label: str = ""


class Journal:
    """This process's journal. Not thread-safe: use it from the event loop's thread."""

    def __init__(self, directory: Path, slots: int = 16384) -> None:
        self.directory = directory
        self.slots = slots
        self.path: Path | None = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._free: list[int] = []

    @property
    def is_open(self) -> bool:
        return self._map is not None

    def open(self) -> None:
        """Create this process's journal; raises if the directory is not safe to use."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            # Anyone else who can write there could plant journals to be "given back".
            raise PermissionError(
                f"usage.journal_dir {self.directory} must be a directory owned by this "
                "user with no access for others (mode 0700)"
            )
        name = f"{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            # Blocking: another process's scan may hold it for a moment. The header goes
            # in only once the lock is ours, so no scan takes a new journal for a
            # dead one.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = _HEADER + self.slots * _SLOT.size
            if hasattr(os, "posix_fallocate"):
                # Real blocks now: a full disk fails here, not as SIGBUS on a store later.
                os.posix_fallocate(fd, 0, size)
            else:  # pragma: no cover - not Linux
                os.ftruncate(fd, size)
            os.pwrite(fd, _HEADER_FIELDS.pack(_MAGIC, self.slots, _boot_id()), 0)
            self._map = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self.path = fd, path
        self._free = list(range(self.slots - 1, -1, -1))

    def close(self) -> None:
        """Delete the journal: call only once nothing is in flight (after draining)."""
        self._shut(delete=True)

    def abandon(self) -> None:
        """Let go of the journal but leave it, for another process to settle."""
        self._shut(delete=False)

    def _shut(self, *, delete: bool) -> None:
        if self._map is None:
            return
        self._map.close()
        self._map = None
        if delete and self.path is not None:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1

    def begin(
        self, key_id: str, images: int, member: str, user_id: str, price: int = 0, label: str = ""
    ) -> int:
        """Record an admission about to be sent; its slot, or :data:`NO_SLOT`."""
        journal = self._map
        key, name, user = key_id.encode(), member.encode(), user_id.encode()
        if (
            journal is None
            or not self._free
            or len(key) > _TEXT
            or len(name) > _TEXT
            or len(user) > _TEXT
        ):
            return NO_SLOT
        slot = self._free.pop()
        offset = _HEADER + slot * _SLOT.size
        _SLOT.pack_into(
            journal, offset, FREE, images, -1, key, name, user, price, -1, -1, label.encode()
        )
        journal[offset] = ADMITTING
        return slot

    def admitted(self, slot: int, day: int, purchased: int | None = None, month: int = -1) -> None:
        """The reply came: the day (and, when credits were reserved, how many of them
        were purchased ones and in which month) are known."""
        journal = self._map
        if journal is None or slot < 0:
            return
        offset = _HEADER + slot * _SLOT.size
        _DAY.pack_into(journal, offset + _DAY_OFFSET, day)
        if purchased is not None:
            _CREDITS.pack_into(journal, offset + _CREDITS_OFFSET, purchased, month)
        journal[offset] = ADMITTED

    def shrink(self, slot: int, images: int) -> None:
        """Only ``images`` of the reservation remain (the rest is being given back)."""
        journal = self._map
        if journal is None or slot < 0:
            return
        _COUNT.pack_into(journal, _HEADER + slot * _SLOT.size + _COUNT_OFFSET, images)

    def end(self, slot: int) -> None:
        """The reservation is settled: delivered, given back, or never admitted."""
        journal = self._map
        if journal is None or slot < 0:
            return
        offset = _HEADER + slot * _SLOT.size
        if journal[offset] == FREE:  # ended already: the slot is not free twice
            return
        journal[offset] = FREE
        self._free.append(slot)

    def entry(self, slot: int) -> Reservation:
        assert self._map is not None
        return _read_slot(self._map, slot)

    @property
    def in_use(self) -> int:
        return self.slots - len(self._free) if self._map is not None else 0


def _read_slot(data: mmap.mmap | bytes, slot: int, layout: struct.Struct = _SLOT) -> Reservation:
    fields = layout.unpack_from(data, _HEADER + slot * layout.size)
    state, images, day, key_id, member, user_id, price, purchased, month = fields[:9]
    label = fields[9].rstrip(b"\0").decode(errors="replace") if len(fields) > 9 else ""
    return Reservation(
        state=state,
        images=images,
        day=day,
        key_id=key_id.rstrip(b"\0").decode(errors="replace"),
        member=member.rstrip(b"\0").decode(errors="replace"),
        user_id=user_id.rstrip(b"\0").decode(errors="replace"),
        price=price,
        purchased=purchased,
        month=month,
        label=label,
    )


@dataclass(slots=True)
class Orphan:
    """A dead process's journal, locked by this process until :meth:`discard`."""

    path: Path
    fd: int
    reservations: list[Reservation]

    def discard(self) -> None:
        """Everything in it is settled: delete it and let go of the lock."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)

    def keep(self) -> None:
        """Settling failed: leave it for the next attempt (by any process)."""
        os.close(self.fd)

    def set_aside(self) -> None:
        """It cannot be settled: rename it ``*.bad`` (never scanned again) for a human."""
        with contextlib.suppress(OSError):
            self.path.rename(self.path.with_name(self.path.name + ".bad"))
        os.close(self.fd)


def orphans(directory: Path, own: Path | None) -> Iterator[Orphan]:
    """The journals in ``directory`` whose process is gone, each locked while yielded.

    The caller must :meth:`Orphan.discard` or :meth:`Orphan.keep` each one.
    """
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except FileNotFoundError:
        return
    boot = _boot_id()
    for name in names:
        path = directory / name
        if not name.endswith(_SUFFIX) or path == own:
            continue
        try:
            orphan = _take(path, boot)
        except OSError as exc:  # unreadable, not a regular file, not ours...
            log.warning("skipping journal %s (%s)", name, exc)
            continue
        if orphan is not None:
            yield orphan


def _take(path: Path, boot: bytes) -> Orphan | None:
    """The journal at ``path``, locked, if its process is gone; else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None  # settled by another process just now
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise PermissionError("not a regular file of this user")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Another process may have settled and deleted it between open and flock.
        if info.st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
        data = os.pread(fd, info.st_size, 0)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)  # its process is alive, or it is gone
        return None
    except BaseException:
        os.close(fd)
        raise
    if len(data) < _HEADER or data[:4] not in (_MAGIC, _MAGIC_V3):
        # Being created (its process locks it, then writes the header), or left
        # half-created by a process that died right then.
        if time.time() - info.st_mtime < _CREATION_GRACE_S:
            os.close(fd)
            return None
        return Orphan(path=path, fd=fd, reservations=[])
    _, slots, written_in = _HEADER_FIELDS.unpack_from(data)
    if boot and written_in != boot:
        log.warning("discarding journal %s: written before the last reboot", path.name)
        return Orphan(path=path, fd=fd, reservations=[])
    layout = _SLOT if data[:4] == _MAGIC else _SLOT_V3
    slots = min(slots, (len(data) - _HEADER) // layout.size)
    reservations = [
        entry
        for entry in (_read_slot(data, slot, layout) for slot in range(slots))
        if entry.state in (ADMITTING, ADMITTED)
    ]
    return Orphan(path=path, fd=fd, reservations=reservations)
