"""What every config struct is built from: :class:`Section`, and the field helpers."""

from __future__ import annotations

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
    """Every config struct: immutable, keyword-built, and an unknown key is an error."""
