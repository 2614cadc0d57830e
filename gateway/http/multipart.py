"""``multipart/form-data`` request bodies (image edits and variations), read as a stream.

The parser is aiohttp's own :class:`aiohttp.MultipartReader` (``request.multipart()``):
it is already the server's dependency, maintained with it, and it hands out each part as
a stream (``read_chunk``), so nothing here splits bytes on boundaries by hand and nothing
holds a whole body. python-multipart would do as well, but is one more dependency for
the same streaming parse.

Limits are enforced as bytes arrive, each failure a clear 4xx before the rest is read:

* a ``Content-Length`` over the whole limit is 413 before any byte is read, and the
  bytes received are counted as they come (a chunked body too): 413 past the limit;
* a file over ``server.max_upload_bytes``: 413 naming the field;
* more than :data:`MAX_PARTS` parts, a part without a name, a nested multipart, a file
  under a name the endpoint does not take, a text field over its limit, a body that is
  not multipart: 400 naming the field where there is one;
* each read waits at most ``server.body_read_timeout_seconds`` for the next bytes (408).

A file is held in memory up to :data:`SPILL_BYTES`, then spills to a temporary file
(:class:`tempfile.SpooledTemporaryFile`, unlinked as soon as it is made); :meth:`Form.close`
frees them all, and the handlers call it when the request ends, however it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import parse_content_disposition

from gateway.errors import ClientClosedRequest, InvalidRequest, PayloadTooLarge, RequestTimeout

__all__ = ["MAX_PARTS", "SPILL_BYTES", "Form", "FormFile", "FormLimits", "read_form"]

#: The most parts a form may have (16 images, a mask and a dozen fields fit well).
MAX_PARTS = 64
#: A file is kept in memory up to this size, then in a temporary file.
SPILL_BYTES = 1024 * 1024
#: Text fields not listed in :attr:`FormLimits.text_bytes` are ignored, up to this size.
OTHER_TEXT_BYTES = 1024
_CHUNK = 64 * 1024
NOT_MULTIPART = "The request body must be 'multipart/form-data' with the fields described."


@dataclass(frozen=True, slots=True)
class FormLimits:
    """What a form may hold."""

    #: The names file parts may have (``image``, ``image[]``, ``mask``).
    file_fields: frozenset[str]
    #: The longest value, in bytes, of each known text field.
    text_bytes: Mapping[str, int]
    #: The largest file (``server.max_upload_bytes``).
    max_file_bytes: int
    #: The largest whole body.
    max_body_bytes: int
    #: Seconds to wait for the next bytes (``server.body_read_timeout_seconds``).
    read_timeout: float
    max_parts: int = MAX_PARTS


@dataclass(slots=True)
class FormFile:
    """One uploaded file: its field name, the client's file name and media type, its
    bytes (in memory, or spilled to a temporary file)."""

    name: str
    filename: str
    content_type: str
    file: IO[bytes]
    size: int = 0

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()


@dataclass(slots=True)
class Form:
    """The parts of a form, in order: text fields by name (the last one wins), files."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[FormFile] = field(default_factory=list)
    #: A SHA-256 over every part's name, file name and value, in order: the same form
    #: whatever the boundary or the part headers (``Idempotency-Key`` compares it).
    digest: str = ""

    def close(self) -> None:
        """Free the files (temporary files are deleted)."""
        for upload in self.files:
            upload.file.close()
        self.files = []


async def read_form(request: web.Request, limits: FormLimits) -> Form:
    """The request's ``multipart/form-data`` body, within ``limits``.

    Raises the 400 :class:`InvalidRequest` (naming the field), the 413
    :class:`PayloadTooLarge`, the 408 :class:`RequestTimeout`, or
    :class:`ClientClosedRequest`. The form's files are closed if it fails.
    """
    if request.content_type != "multipart/form-data":
        raise InvalidRequest(NOT_MULTIPART)
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise _too_large(limits)
    form = Form()
    try:
        await _read_parts(request, limits, form)
    except BaseException:
        form.close()
        raise
    return form


async def _read_parts(request: web.Request, limits: FormLimits, form: Form) -> None:
    digest = hashlib.sha256()
    stream = request.content
    try:
        reader = await request.multipart()
        parts = 0
        while True:
            async with asyncio.timeout(limits.read_timeout):
                part = await reader.next()
            if part is None:
                break
            parts += 1
            name = _name_of(part)
            if parts > limits.max_parts:
                raise InvalidRequest(
                    f"The form has more than {limits.max_parts} parts.", param=name
                )
            if isinstance(part, aiohttp.MultipartReader):
                raise InvalidRequest(
                    f"'{name or 'a part'}' is itself multipart: not allowed.", param=name
                )
            if not name:
                raise InvalidRequest("A part of the form has no name (Content-Disposition).")
            filename = part.filename
            if filename is not None:
                if name not in limits.file_fields:
                    raise InvalidRequest(f"'{name}' is not a file field here.", param=name)
                upload = FormFile(
                    name,
                    filename,
                    part.headers.get(aiohttp.hdrs.CONTENT_TYPE, "application/octet-stream"),
                    tempfile.SpooledTemporaryFile(max_size=SPILL_BYTES),  # noqa: SIM115 - closed by Form.close
                )
                form.files.append(upload)
                await _copy(part, upload, limits, stream, digest)
            else:
                limit = limits.text_bytes.get(name, OTHER_TEXT_BYTES)
                value = await _read_text(part, name, limit, limits, stream)
                digest.update(b"T%d:%s%d:" % (len(name), name.encode(), len(value)) + value)
                if name in limits.text_bytes:
                    try:
                        form.fields[name] = value.decode()
                    except UnicodeDecodeError:
                        raise InvalidRequest(f"'{name}' must be UTF-8 text.", param=name) from None
    except TimeoutError:
        raise RequestTimeout() from None
    except (ConnectionError, aiohttp.ClientPayloadError):
        raise ClientClosedRequest() from None
    except (ValueError, RuntimeError, HttpProcessingError, AssertionError, KeyError) as exc:
        # aiohttp's words for a malformed body (no boundary parameter, a broken part, a
        # line too long): the client sent something that is not multipart.
        raise InvalidRequest(f"{NOT_MULTIPART} ({type(exc).__name__})") from None
    form.digest = digest.hexdigest()


def _name_of(part: aiohttp.BodyPartReader | aiohttp.MultipartReader) -> str | None:
    if isinstance(part, aiohttp.BodyPartReader):
        return part.name
    _, params = parse_content_disposition(part.headers.get(aiohttp.hdrs.CONTENT_DISPOSITION))
    return params.get("name")


def _check_total(stream: aiohttp.StreamReader, limits: FormLimits) -> None:
    if stream.total_bytes > limits.max_body_bytes:
        raise _too_large(limits)


def _too_large(limits: FormLimits) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body must be at most {limits.max_body_bytes} bytes.")


async def _copy(
    part: aiohttp.BodyPartReader,
    upload: FormFile,
    limits: FormLimits,
    stream: aiohttp.StreamReader,
    digest: hashlib._Hash,
) -> None:
    name = upload.name
    file_digest = hashlib.sha256()
    while True:
        async with asyncio.timeout(limits.read_timeout):
            chunk = await part.read_chunk(_CHUNK)
        if not chunk:
            break
        _check_total(stream, limits)
        upload.size += len(chunk)
        if upload.size > limits.max_file_bytes:
            raise PayloadTooLarge(
                f"'{name}' must be a file of at most {limits.max_file_bytes} bytes.", param=name
            )
        upload.file.write(chunk)
        file_digest.update(chunk)
    filename = upload.filename.encode()
    digest.update(
        b"F%d:%s%d:%s" % (len(name), name.encode(), len(filename), filename) + file_digest.digest()
    )


async def _read_text(
    part: aiohttp.BodyPartReader,
    name: str,
    limit: int,
    limits: FormLimits,
    stream: aiohttp.StreamReader,
) -> bytes:
    value = bytearray()
    while True:
        async with asyncio.timeout(limits.read_timeout):
            chunk = await part.read_chunk(_CHUNK)
        if not chunk:
            return bytes(value)
        _check_total(stream, limits)
        value += chunk
        if len(value) > limit:
            raise InvalidRequest(f"'{name}' must be at most {limit} bytes.", param=name)
