"""What every config struct is built from: :class:`Section`, and the field helpers."""

from __future__ import annotations

import re
from typing import Any

from msgspec import Meta, Struct

__all__ = ["Section", "doc", "says"]


def doc(text: str) -> Meta:
    """The doc of a key, as ``Annotated[type, doc("...")]``."""
    return Meta(description=text)


def says(message: str, *, always: bool = False) -> dict[str, Any]:
    """``Meta(extra=says(...))``: the words for a value that breaks the field's constraint
    (the error reads ``<key>: <message>``). ``always``: for any error of that key, a
    missing key or a value of the wrong type included."""
    return {"message": message, "always": always}


class Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every config struct: immutable, keyword-built, and an unknown key is an error.

    Its ``repr`` never shows a secret (a config may end up in a log or a traceback):
    keys named like one are masked, and so is a URL's password.
    """

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={_masked(name, getattr(self, name))!r}" for name in self.__struct_fields__
        )
        return f"{type(self).__name__}({shown})"


_SECRET_NAMES = ("secret", "token", "password")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):[^@/\s]*@")


def _masked(name: str, value: Any) -> Any:
    if value and any(word in name for word in _SECRET_NAMES):
        if isinstance(value, str):
            return "***"
        if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
            return tuple("***" for _ in value)
    if isinstance(value, str) and "@" in value:
        return _URL_PASSWORD.sub(r"\1:***@", value)
    return value
