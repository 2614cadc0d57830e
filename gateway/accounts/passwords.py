"""Password hashing with bcrypt, off the event loop.

bcrypt reads only the first 72 bytes of its input, so a long password would be
silently truncated (two passwords sharing 72 bytes would both verify). Every
password is first reduced to a fixed-size digest: base64(SHA-256(password)), 44
ASCII bytes with no NUL, and that is what bcrypt hashes. Nothing is truncated and
every character counts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import bcrypt

__all__ = ["PasswordHasher"]


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


class PasswordHasher:
    def __init__(self, cost: int) -> None:
        self._cost = cost
        # Checked against when an email is unknown, so that case costs the same time.
        self._dummy = bcrypt.hashpw(b"dummy password", bcrypt.gensalt(cost))

    async def hash(self, password: str) -> str:
        digest = _prehash(password)
        hashed = await asyncio.to_thread(bcrypt.hashpw, digest, bcrypt.gensalt(self._cost))
        return hashed.decode("ascii")

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True if ``password`` matches ``hashed``; with no hash, spends the same time."""
        digest = _prehash(password)
        target = hashed.encode("ascii") if hashed else self._dummy
        matched = await asyncio.to_thread(bcrypt.checkpw, digest, target)
        return matched and hashed is not None
