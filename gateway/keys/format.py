"""The API key format: ``<prefix><32 base62 random><6 base62 checksum>``.

The random part carries 190 bits, so a single SHA-256 is the right stored hash (no
salt or slow hash needed, and it allows an indexed lookup). The checksum is no
secret: it lets the gateway turn away mistyped keys and random junk with no I/O.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from dataclasses import dataclass

__all__ = [
    "ParsedKey",
    "display_prefix",
    "generate_key",
    "hash_key",
    "key_digest",
    "looks_like_key",
    "parse_key",
]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALPHABET_SET = frozenset(ALPHABET)
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key that passed the format check; ``key_hash`` is what the database stores."""

    key_hash: str


def _checksum(text: str) -> str:
    value = zlib.crc32(text.encode("ascii"))
    out = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def generate_key(prefix: str) -> str:
    """A new key, shown to its owner once and never stored."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return f"{prefix}{body}{_checksum(prefix + body)}"


def key_digest(key: str) -> bytes:
    """SHA-256 of the key: what the process cache is keyed by (``hash_key`` in hex).

    Any text is accepted (a header with undecodable bytes is no key, but must not raise).
    """
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


def hash_key(key: str) -> str:
    """The key's stored hash: its :func:`key_digest` in hex."""
    return key_digest(key).hex()


def parse_key(candidate: str, prefix: str) -> ParsedKey | None:
    """The key's hash if ``candidate`` is well formed, else ``None`` (no I/O either way)."""
    if len(candidate) != len(prefix) + RANDOM_LENGTH + CHECKSUM_LENGTH:
        return None
    if not candidate.startswith(prefix):
        return None
    tail = candidate[len(prefix) :]
    if not _ALPHABET_SET.issuperset(tail):
        return None
    body, checksum = tail[:RANDOM_LENGTH], tail[RANDOM_LENGTH:]
    if not secrets.compare_digest(_checksum(prefix + body), checksum):
        return None
    return ParsedKey(key_hash=hash_key(candidate))


def looks_like_key(text: str, prefix: str) -> bool:
    """True if ``text`` could be an API key: it starts with ``prefix``, or it ends in a
    random part and checksum that match (under any prefix, this gateway's or another's).

    For values that must never be echoed or logged, such as a client's request id.
    """
    if prefix and text.startswith(prefix):
        return True
    tail_length = RANDOM_LENGTH + CHECKSUM_LENGTH
    if len(text) < tail_length or not _ALPHABET_SET.issuperset(text[-tail_length:]):
        return False
    return secrets.compare_digest(_checksum(text[:-CHECKSUM_LENGTH]), text[-CHECKSUM_LENGTH:])


def display_prefix(key: str, prefix: str) -> str:
    """The short form kept in the database to recognise a key: never the whole key."""
    return f"{key[: len(prefix) + 4]}...{key[-4:]}"
