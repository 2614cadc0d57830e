"""The images response: the upstream's base64 bytes written to the client as they are.

An images answer is a few hundred bytes of JSON around megabytes of base64. Building it
as a Python object and encoding it copies every image into a ``str`` and then into the
encoder's output, and aiohttp joins that with the head before writing (on Python
before 3.12.9 it never hands the transport a list of buffers), so a 1.4 MB image was
held three times over per request in flight. :class:`ImagesResponse` instead writes a
list of buffers (:func:`relay_pieces`): the JSON around the images, encoded once by the
contract's own type with each image left empty, and in those slots each image's base64
as it came (:meth:`GeneratedImage.encoded`: a view of the buffer the upstream's answer
was read into). So:

* **Copies**: between the upstream socket and the client socket an image's bytes are
  copied by the kernel into the answer's buffer, and by the kernel out of it; nothing
  in Python copies them. The only bytes made per response are the JSON pieces.
* **Framing**: ``Content-Length`` is the sum of the pieces, known before the first
  byte; no chunked encoding, and each image is one ``write`` (uvloop's transport keeps a
  reference and writes it as the socket takes it; asyncio's own copies what the socket
  did not take at once). A body under 64 KiB is joined and goes out with its head in one
  write, as a plain response's would.
* **Memory**: the upstream client reads a body with a ``Content-Length`` into one buffer
  of that size (:mod:`gateway.backends.h1`), and an idempotency key keeps the answer
  whole (:meth:`ImagesResponse.joined_body`, a copy made only then).
* **Backpressure**: after each piece the response waits for the transport to drain
  below its high-water mark, so a slow client holds what it has not read yet and no
  more: the answer's own buffer, which the response refers to and does not copy.
  What a request in flight holds is about the size of its answer.
* **Delivery**: the usage reservation is settled just before the first byte goes out
  (see :mod:`gateway.limits.journal`): a process killed before then leaves it in its
  journal, for another process to give back; after that the images count, whether or
  not the client reads them all.

Measured against a bare aiohttp proxy relaying the same answers: BENCHMARKS.md, "Image
relay".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from gateway.backends.base import GeneratedImage, ImageBuffer

__all__ = ["ImagesResponse", "relay_pieces"]


#: How the contract's encoder writes an image whose ``b64_json`` is empty. The sequence
#: cannot occur inside a JSON string (its quotes would be escaped), so each occurrence
#: is an image's slot.
_EMPTY_SLOT = b'"b64_json":""'
_SLOT_OPEN = b'"b64_json":"'
#: A body up to this size is joined and written at once: a write costs a system call,
#: a copy this small costs less (measured: BENCHMARKS.md, "Image relay").
_JOIN_BELOW = 64 * 1024


def relay_pieces(encoded: bytes, images: Sequence[GeneratedImage]) -> list[ImageBuffer]:
    """The answer as buffers: ``encoded`` (the response encoded with every image's
    ``b64_json`` empty) cut at those slots, each image's base64 between the pieces.

    So the JSON around the images is written by the contract's own type and encoder,
    once, and the result is byte for byte what encoding it with the images would give.
    """
    parts = encoded.split(_EMPTY_SLOT)
    if len(parts) != len(images) + 1:
        raise ValueError("one empty b64_json slot per image expected")
    pieces: list[ImageBuffer] = [parts[0] + _SLOT_OPEN]
    for image, part in zip(images, parts[1:], strict=True):
        pieces.append(image.encoded())
        pieces.append(b'"' + part + _SLOT_OPEN)
    pieces[-1] = pieces[-1][: -len(_SLOT_OPEN)]
    return pieces


class ImagesResponse(web.StreamResponse):
    """A 200 whose body is ``pieces``, written as they are (see the module's docstring).

    ``on_send`` settles the request's reservation: called once, just before the body's
    first byte goes to the transport, or when the response cannot be started (the
    client left after its images were made: they count).

    The head is not sent by :meth:`prepare` on its own: aiohttp keeps it until the first
    write, so it leaves with the body's first piece (the whole body, when small) in one
    system call and one TCP segment, as a plain ``web.Response``'s does. Sending it
    apart cost a second ``send`` per request, and the client a second wake-up.
    """

    _send_headers_immediately = False

    def __init__(
        self,
        *,
        pieces: list[ImageBuffer],
        headers: dict[str, str],
        on_send: Callable[[], None],
    ) -> None:
        super().__init__(headers=headers)
        self.content_type = "application/json"
        self.content_length = sum(len(piece) for piece in pieces)
        self._pieces = pieces
        self._on_send: Callable[[], None] | None = on_send

    def joined_body(self) -> bytes:
        """The whole body in one ``bytes`` (a copy: for keeping it, not for sending)."""
        return b"".join(self._pieces)

    def _settle(self) -> None:
        on_send, self._on_send = self._on_send, None
        if on_send is not None:
            on_send()

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        except BaseException:
            self._pieces = []
            self._settle()
            raise

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        pieces, self._pieces = self._pieces, []  # the buffers go when the writing ends
        self._settle()
        if self.content_length is not None and self.content_length <= _JOIN_BELOW:
            pieces = [b"".join(pieces)]  # small: one write with the head, as a Response
        for piece in pieces:  # the first, small, goes out with the head in one write
            await self.write(piece)
        await super().write_eof()
