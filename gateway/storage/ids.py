"""File ids: unguessable names that carry the file's type and are its object path.

A file id is ``file_`` + 22 base62 characters (131 random bits from :mod:`secrets`) +
``.`` + an extension naming its media type (``file_4GkQ...Zp.png``). It says nothing of
the key or the user that made it, and it *is* the object's path in the store, so a link
is served without a lookup, and the type travels with the name (the local file store
keeps no per-object attributes).
"""

from __future__ import annotations

import re
import secrets

__all__ = [
    "CONTENT_TYPES",
    "FALLBACK_CONTENT_TYPE",
    "FILE_ID",
    "content_type_of",
    "extension_for",
    "is_file_id",
    "new_file_id",
]

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS = 22  # 62**22 > 2**130
_BASE = len(_ALPHABET)
_IDS = _BASE**_RANDOM_CHARS
FALLBACK_CONTENT_TYPE = "application/octet-stream"
#: Extension -> media type; anything else is stored as ``.bin``, served as octet-stream
#: (never as HTML or SVG from the gateway's origin).
CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
    "bin": FALLBACK_CONTENT_TYPE,
}
_EXTENSIONS = {media: ext for ext, media in CONTENT_TYPES.items()} | {"image/jpg": "jpg"}
FILE_ID = re.compile(rf"file_[0-9A-Za-z]{{{_RANDOM_CHARS}}}\.({'|'.join(CONTENT_TYPES)})")


def extension_for(content_type: str) -> str:
    """The extension a file of ``content_type`` is stored under (``bin`` if unknown)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(media, "bin")


def new_file_id(content_type: str) -> str:
    """A fresh, unguessable file id for a file of ``content_type``.

    One number below 62**22 written in base 62: every id as likely as any other, from one
    read of the system's randomness (two in 0.5% of draws, which ``randbelow`` repeats;
    3 µs), where a ``secrets.choice`` per character reads it 22 times (27 µs, one
    ``getrandom`` call each).
    """
    number = secrets.randbelow(_IDS)
    digits = []
    for _ in range(_RANDOM_CHARS):
        number, digit = divmod(number, _BASE)
        digits.append(_ALPHABET[digit])
    return f"file_{''.join(digits)}.{extension_for(content_type)}"


def is_file_id(text: str) -> bool:
    return FILE_ID.fullmatch(text) is not None


def content_type_of(file_id: str) -> str:
    """The media type a well-formed ``file_id`` names."""
    return CONTENT_TYPES.get(file_id.rsplit(".", 1)[-1], FALLBACK_CONTENT_TYPE)
