"""What request bodies share: how a violation is told to the client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

__all__ = ["CONTROL_FREE", "Instant", "RequestBody"]

#: A point in time, with its time zone (RFC 3339 ``date-time``).
Instant = Annotated[dt.datetime, Meta(tz=True)]

#: Text without control characters (tab, LF and CR allowed); Postgres text cannot hold NUL.
CONTROL_FREE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


class RequestBody(msgspec.Struct, gc=False):
    """A JSON object sent by a client. Decoding it is validating it; fields the type
    does not name are ignored (OpenAI clients send fields this gateway does not know)."""

    #: The 400 message for a bad field, by ``param`` (``"n"``, ``"metadata.owner"``) or
    #: by ``param:kind`` (``"prompt:too_long"``), ``str.format``-ed with the decoding
    #: context; a field not listed gets a message built from the violated constraint.
    messages: ClassVar[Mapping[str, str]] = {}
    #: False: a bad field is answered without naming it (``param`` null).
    names_field: ClassVar[bool] = True
    #: The fields whose text the gateway keeps in Postgres (text and jsonb cannot hold
    #: NUL): a NUL in one, at any depth, is a 400 naming where (``metadata.owner``).
    stored_text: ClassVar[tuple[str, ...]] = ()
    #: JSON Schema keywords the type cannot say itself (which fields are required together).
    schema_extra: ClassVar[Mapping[str, Any]] = {}
