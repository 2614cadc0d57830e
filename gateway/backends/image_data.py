"""Images as upstreams send them: bytes, or base64 kept as the upstream's own bytes.

An image answer is mostly base64: a 1 MiB PNG is 1.4 MB of it. The gateway answers in
base64 too, so an image whose base64 is written as encoders write it (padded, digits
only) is not decoded: it is checked, and kept as a view into the buffer the upstream's
answer was read into (:func:`image_from_json_string`), which the response then writes
as it is (:mod:`gateway.http.relay`). Anything else that is valid base64 (line breaks,
JSON escapes, stray bits) is decoded and encoded anew, so the client always gets
canonical base64.

What is checked, and what it costs per MiB of image (BENCHMARKS.md, "Image relay"):
every digit, by decoding the text once with pybase64 (0.06 ms; the decoded copy is
dropped at once, so only the text stays in memory), which also proves that the JSON the
client gets is valid (the JSON parser has refused control characters, and escapes send
the text the slow way); then the padding's stray bits and the image's signature. Its
structure is walked by :mod:`gateway.media.encoded`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from gateway.backends import base64_codec
from gateway.backends.base import GeneratedImage
from gateway.errors import UpstreamError

__all__ = [
    "MAX_BASE64_CHARS",
    "MAX_IMAGE_BYTES",
    "image_from_base64",
    "image_from_bytes",
    "image_from_json_string",
    "media_type",
]

#: The largest image accepted from an upstream (decoded bytes, or one download).
MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: The longest base64 text of an image (padding and a little slack included).
MAX_BASE64_CHARS = MAX_IMAGE_BYTES * 4 // 3 + 4

_MALFORMED_ANSWER = "The image backend sent a malformed response."
_MALFORMED_IMAGE = "The image backend sent a malformed image."
_TOO_LARGE = "The image backend sent an image that is too large."
_DIGITS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_EQUALS = 0x3D
_QUOTE = 0x22
_STRING = msgspec.json.Decoder(str)


def media_type(data: bytes | bytearray | memoryview) -> str | None:
    """The media type that ``data``'s first bytes announce (PNG, JPEG, WebP, GIF)."""
    head = bytes(data[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def image_from_bytes(
    data: bytes | bytearray, *, revised_prompt: str | None = None
) -> GeneratedImage:
    """An image the upstream sent; :class:`UpstreamError` unless it is a PNG/JPEG/WebP/GIF.

    ``data`` is kept, not copied (a download's buffer is base64-encoded from there).
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise UpstreamError(_TOO_LARGE)
    kind = media_type(data)
    if kind is None:
        raise UpstreamError(_MALFORMED_IMAGE)
    return GeneratedImage(data, media_type=kind, revised_prompt=revised_prompt)


def image_from_json_string(
    token: bytes | bytearray | memoryview,
    *,
    revised_prompt: str | None = None,
    checked: bool = False,
) -> GeneratedImage:
    """An image sent as a JSON string: ``token`` is that string as the upstream wrote it,
    quotes included (a ``msgspec.Raw`` of the answer, or a view of one).

    Base64 as encoders write it (with or without a ``data:...;base64,`` prefix) is kept
    as a view of ``token``, not copied; any other text goes through
    :func:`image_from_base64`.

    ``checked``: the caller has already decoded the whole string as strict base64
    (``decode_answer`` of the OpenAI backend does, to find where it ends); only its first
    bytes are decoded again, for the image's signature.

    Raises:
        UpstreamError: not a string, not base64, not an image, or too large.
    """
    view = memoryview(token)
    if len(view) < 2 or view[0] != _QUOTE or view[-1] != _QUOTE:
        raise UpstreamError(_MALFORMED_ANSWER)
    text = view[1:-1]
    if bytes(text[:5]) == b"data:":
        comma = bytes(text[:256]).find(b",")
        if comma < 0 or not bytes(text[:comma]).endswith(b";base64"):
            raise UpstreamError(_MALFORMED_IMAGE)
        text = text[comma + 1 :]
    image = _canonical_image(text, revised_prompt, checked=checked)
    if image is not None:
        return image
    # Escapes, white space, stray bits, or not base64: decided on the decoded string.
    try:
        string = _STRING.decode(token)
    except msgspec.DecodeError:
        raise UpstreamError(_MALFORMED_ANSWER) from None
    return image_from_base64(string, revised_prompt=revised_prompt)


def image_from_base64(encoded: Any, *, revised_prompt: str | None = None) -> GeneratedImage:
    """An image sent as base64 text, with or without a ``data:...;base64,`` prefix.

    Base64 as encoders write it is only checked, not decoded: the image keeps it
    (:meth:`GeneratedImage.from_base64`), and the gateway sends it on as it is. Other
    valid base64 (white space around it, stray bits) is decoded.
    """
    if not isinstance(encoded, str):
        raise UpstreamError(_MALFORMED_ANSWER)
    if encoded.startswith("data:"):
        header, _, encoded = encoded.partition(",")
        if not header.endswith(";base64"):
            raise UpstreamError(_MALFORMED_IMAGE)
    if len(encoded) > MAX_BASE64_CHARS:
        raise UpstreamError(_TOO_LARGE)
    text = encoded.strip()
    if text.isascii():
        image = _canonical_image(memoryview(text.encode("ascii")), revised_prompt)
        if image is not None:
            return image
    # Not as an encoder writes it: decoding says whether it is valid.
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamError(_MALFORMED_IMAGE) from None
    return image_from_bytes(data, revised_prompt=revised_prompt)


def _canonical_image(
    text: memoryview, revised_prompt: str | None, *, checked: bool = False
) -> GeneratedImage | None:
    """The image ``text`` encodes if it is base64 exactly as encoders write it: digits
    only, padded to a multiple of four, no stray bits in the last digit (so decoding
    and encoding again gives ``text`` back); ``None`` if it is not.

    Raises:
        UpstreamError: it is, but too large or not an image.
    """
    size = len(text)
    if not size or size % 4:
        return None
    if size > MAX_BASE64_CHARS:
        raise UpstreamError(_TOO_LARGE)
    pads = 0
    while pads < 2 and text[size - 1 - pads] == _EQUALS:
        pads += 1
    if pads and text[size - 1 - pads] not in _DIGITS:
        return None
    if pads and _DIGITS.index(text[size - 1 - pads]) & (0x0F if pads == 2 else 0x03):
        return None
    if size // 4 * 3 - pads > MAX_IMAGE_BYTES:
        raise UpstreamError(_TOO_LARGE)
    try:
        # Every digit checked, here or by the caller; 12 bytes (16 digits): any signature.
        head = base64_codec.decode(text[:16] if checked else text)[:12]
    except base64_codec.Base64Error:
        return None
    kind = media_type(head)
    if kind is None:
        raise UpstreamError(_MALFORMED_IMAGE)
    return GeneratedImage.from_base64(text, media_type=kind, revised_prompt=revised_prompt)
