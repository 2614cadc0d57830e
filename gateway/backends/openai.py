"""The ``openai`` backend: OpenAI's Images API, or any upstream compatible with it.

``POST {base_url}/images/generations`` with ``{"model", "prompt", "n", "size",
"response_format": "b64_json"}``; edits as ``POST {base_url}/images/edits``, multipart
(``image``, or ``image[]`` for several, ``mask``, ``prompt``, ``n``, ``size``, and the
edit's ``quality``, ``background``, ``output_format``, ``output_compression``,
``input_fidelity``, ``user``, ``stream``, ``partial_images``); variations as
``POST {base_url}/images/variations`` (``image``, ``n``, ``size``, ``user``). Images
come back as ``data[].b64_json``, or as
``data[].url``, which is downloaded without credentials, at most 20 MB, under the egress
policy (no loopback, private or link-local targets unless ``egress.allow`` lists them;
see :mod:`gateway.egress`). ``revised_prompt`` is kept. ``gpt-image-*`` models always
answer in base64 and refuse a ``response_format``, so none is sent for them.

Options: ``base_url`` (default ``https://api.openai.com/v1``), ``api_key_env`` (the
environment variable holding the upstream's key, sent as ``Authorization: Bearer``;
leave it out for an upstream without keys), ``model`` (the upstream's model name;
default: the client's), ``organization`` (sent as ``OpenAI-Organization``), ``sizes``,
``timeout_seconds``, ``max_n_per_call`` (default 1 for ``dall-e-3``, else no limit).

Parameters go upstream under OpenAI's own names. What a model accepts follows OpenAI's
documentation: ``gpt-image-*`` takes ``quality`` (auto, low, medium, high),
``background``, ``output_format``, ``output_compression``, ``moderation``,
``input_fidelity`` (edits) and streams (generations and edits);
``dall-e-3`` takes ``quality`` (auto, standard, hd) and ``style``; ``dall-e-2`` only
``quality`` standard. Any other model (an OpenAI-compatible upstream) is sent whatever
the client asked for, and judges it itself; ``capabilities:`` narrows that. ``user`` is
always sent. A streamed call (``stream``, ``partial_images``) reads the upstream's
Server-Sent Events (:mod:`gateway.backends.sse`) and passes its images on as they come:
a streamed edit is the same multipart form with ``stream`` true.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import aiohttp
import msgspec

from gateway.backends import base64_codec
from gateway.backends.base import (
    EDIT,
    GENERATE,
    VARIATION,
    BackendContext,
    GeneratedImage,
    ImageBackend,
    ImageEvent,
    ImageRequest,
)
from gateway.backends.capabilities import ALL_CAPABILITIES, Capabilities
from gateway.backends.sse import JSON_ANSWER, open_session, read_events
from gateway.backends.upstream import (
    Upstream,
    env_option,
    gather_successes,
    image_from_json_string,
    json_limit,
    multipart_form,
    read_secret,
    refusal,
    request_headers,
    text_option,
    url_option,
)
from gateway.errors import ContentPolicyViolation, GatewayError, UpstreamError, UpstreamRefused

__all__ = ["OpenAIBackend", "decode_answer"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Upstream models that accept only ``n=1``.
_ONE_PER_CALL = frozenset({"dall-e-3"})
#: What OpenAI's own models accept (its API reference for ``images/generations``).
_GPT_IMAGE = Capabilities(
    quality=("auto", "low", "medium", "high"),
    background=("auto", "transparent", "opaque"),
    output_format=("png", "jpeg", "webp"),
    moderation=("auto", "low"),
    input_fidelity=("high", "low"),
    output_compression=True,
    stream=True,
)
_DALL_E_3 = Capabilities(quality=("auto", "standard", "hd"), style=("vivid", "natural"))
_DALL_E_2 = Capabilities(quality=("auto", "standard"))
#: The parameters passed on under their own names when the client sent them (an edit
#: has no ``style`` nor ``moderation``; a variation none of them).
_PASSED = ("quality", "style", "background", "output_format", "output_compression", "moderation")
_EDIT_PASSED = ("quality", "background", "output_format", "output_compression", "input_fidelity")
#: What the dall-e models do not take (their only value is the default: not sent).
_GPT_IMAGE_ONLY = frozenset(
    {"background", "output_format", "output_compression", "moderation", "input_fidelity"}
)


class OpenAIBackend(ImageBackend):
    options: Sequence[str] = (
        "base_url",
        "api_key_env",
        "model",
        "organization",
        "sizes",
        "timeout_seconds",
    )
    #: ``None``: ``base_url`` is required.
    default_base_url: str | None = DEFAULT_BASE_URL
    capabilities = ALL_CAPABILITIES
    operations = frozenset({GENERATE, EDIT, VARIATION})

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        base_url = url_option(name, options, "base_url", self.default_base_url)
        self._url = base_url + "/images/generations"
        self._urls = {EDIT: base_url + "/images/edits", VARIATION: base_url + "/images/variations"}
        self._api_key_env = env_option(name, options, "api_key_env", required=False)
        self._model = text_option(name, options, "model")
        self._organization = text_option(name, options, "organization")
        self._upstream: Upstream | None = None
        self._streams: aiohttp.ClientSession | None = None

    def upstream_model(self, request_model: str) -> str:
        return self._model or request_model

    def model_capabilities(self, model: str) -> Capabilities:
        upstream_model = self.upstream_model(model)
        if upstream_model.startswith("gpt-image"):
            return _GPT_IMAGE
        if upstream_model == "dall-e-3":
            return _DALL_E_3
        if upstream_model == "dall-e-2":
            return _DALL_E_2
        return self.capabilities

    def unsent_params(self, upstream_model: str) -> frozenset[str]:
        """Parameters not sent to ``upstream_model``: the dall-e models refuse the
        gpt-image ones, whose only value they accept (``auto``, ``png``) is their default."""
        return _GPT_IMAGE_ONLY if upstream_model.startswith("dall-e") else frozenset()

    def check_environment(self, environ: Mapping[str, str]) -> None:
        if self._api_key_env:
            read_secret(self.name, "api_key_env", self._api_key_env, environ)

    async def start(self, context: BackendContext) -> None:
        headers: dict[str, str] = {}
        secrets: list[str] = []
        if self._api_key_env:
            key = read_secret(self.name, "api_key_env", self._api_key_env)
            headers["Authorization"] = f"Bearer {key}"
            secrets.append(key)
        if self._organization:
            headers["OpenAI-Organization"] = self._organization
        self._upstream = Upstream(
            context,
            name=self.name,
            timeout_seconds=self.timeout_seconds,
            headers=headers,
            secrets=secrets,
        )

    async def close(self) -> None:
        if self._streams is not None:
            await self._streams.close()
            self._streams = None

    def images_per_call(self, request: ImageRequest) -> int | None:
        """dall-e-3 answers only ``n=1``: unless ``max_n_per_call`` says otherwise, its
        calls are fanned out one image each."""
        if self.max_n_per_call is None and (self._model or request.model) in _ONE_PER_CALL:
            return 1
        return self.max_n_per_call

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        """The JSON sent upstream for ``request``."""
        model = self.upstream_model(request.model)
        body: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "n": request.n,
            "size": f"{request.width}x{request.height}",
        }
        unsent = self.unsent_params(model)
        if not model.startswith("gpt-image"):
            body["response_format"] = "b64_json"
        for param in _PASSED:
            value = getattr(request, param)
            if value is not None and param not in unsent:
                body[param] = value
        if request.user is not None:
            body["user"] = request.user
        if request.stream:
            body["stream"] = True
            body["partial_images"] = request.partial_images
        return body

    def request_form(self, request: ImageRequest) -> tuple[bytes, str]:
        """The multipart form sent upstream for an edit or a variation ``request``."""
        model = self.upstream_model(request.model)
        fields: list[tuple[str, str | int]] = [
            ("model", model),
            ("n", request.n),
            ("size", f"{request.width}x{request.height}"),
        ]
        if not model.startswith("gpt-image"):
            fields.append(("response_format", "b64_json"))
        name = "image[]" if len(request.images) > 1 else "image"
        files = [(name, image) for image in request.images]
        if request.operation == EDIT:
            fields.append(("prompt", request.prompt))
            unsent = self.unsent_params(model)
            for param in _EDIT_PASSED:
                value = getattr(request, param)
                if value is not None and param not in unsent:
                    fields.append((param, value))
            if request.stream:
                fields += [("stream", "true"), ("partial_images", request.partial_images)]
            if request.mask is not None:
                files.append(("mask", request.mask))
        if request.user is not None:
            fields.append(("user", request.user))
        return multipart_form(fields, files)

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        upstream = self._upstream
        assert upstream is not None, "start() was not called"
        url, body, content = self._call_of(request)
        answer: _Answer = await upstream.call(
            "POST",
            url,
            body=body,
            content=content,
            headers=request_headers(request),
            max_bytes=json_limit(request.n),
            decode=decode_answer,
        )
        return await self._images_of(upstream, answer, request.n)

    def _call_of(
        self, request: ImageRequest
    ) -> tuple[str, dict[str, Any] | None, tuple[bytes, str] | None]:
        """``(url, JSON body, multipart form)`` of the upstream call for ``request``."""
        if request.operation == GENERATE:
            return self._url, self.request_body(request), None
        return self._urls[request.operation], None, self.request_form(request)

    async def _images_of(self, upstream: Upstream, answer: _Answer, n: int) -> list[GeneratedImage]:
        """The images of an Images API answer (base64 kept, links downloaded)."""
        if not answer.data:
            raise UpstreamError("The image backend returned no images.")
        images: list[GeneratedImage] = []
        urls: list[tuple[str, str | None]] = []
        for item in answer.data[:n]:
            revised = item.revised_prompt
            revised = revised if isinstance(revised, str) else None
            token = memoryview(item.b64_json)
            if token and bytes(token[:4]) != b"null":
                checked = type(item) is _CheckedItem  # its text is strict base64
                images.append(
                    image_from_json_string(token, revised_prompt=revised, checked=checked)
                )
            elif isinstance(item.url, str):
                urls.append((item.url, revised))
            else:
                raise UpstreamError("The image backend sent a malformed response.")
        if urls:
            downloads = [upstream.download_image(url, revised_prompt=r) for url, r in urls]
            try:
                images += await gather_successes(self.name, downloads)
            except GatewayError:
                if not images:
                    raise
        return images

    async def stream(self, request: ImageRequest) -> AsyncGenerator[ImageEvent, None]:
        upstream = self._upstream
        assert upstream is not None, "start() was not called"
        if self._streams is None:
            self._streams = open_session()
        url, body, content = self._call_of(request)
        events = read_events(
            self._streams,
            upstream,
            url,
            body,
            request_headers(request),
            content=content,
            max_event_bytes=json_limit(1),
            max_json_bytes=json_limit(request.n),
        )
        completed = 0
        try:
            async for sse in events:
                if sse.event == JSON_ANSWER:  # an upstream that does not stream: all at once
                    try:
                        answer = decode_answer(sse.data)
                    except msgspec.DecodeError:
                        raise UpstreamError(
                            "The image backend sent a malformed response."
                        ) from None
                    for index, image in enumerate(
                        await self._images_of(upstream, answer, request.n)
                    ):
                        yield ImageEvent(image, index)
                        completed += 1
                    return
                try:
                    event = _EVENT.decode(sse.data)
                except msgspec.DecodeError:
                    raise UpstreamError("The image backend sent a malformed event.") from None
                if event.error is not None:
                    raise _stream_error(upstream, event.error)
                kind = event.type or sse.event
                if kind.endswith(".partial_image"):
                    image = image_from_json_string(event.b64_json)
                    partial = event.partial_image_index
                    index = partial if isinstance(partial, int) and partial >= 0 else 0
                    yield ImageEvent(image, completed, index)
                elif kind.endswith(".completed"):
                    image = image_from_json_string(event.b64_json)
                    usage = event.usage if isinstance(event.usage, dict) else None
                    yield ImageEvent(image, completed, None, usage)
                    completed += 1
                    if completed >= request.n:
                        return
        finally:
            await events.aclose()
        if not completed:
            raise UpstreamError("The image backend's stream ended without an image.")


def _stream_error(upstream: Upstream, error: Any) -> UpstreamError | UpstreamRefused:
    """An error event: the request's own fault (a policy refusal) or the upstream's."""
    payload = {"error": error if isinstance(error, dict) else {"message": str(error)}}
    message = payload["error"].get("message")
    detail = upstream.sanitize(message) if isinstance(message, str) else None
    refused = refusal(detail, payload)
    if isinstance(refused, ContentPolicyViolation) or payload["error"].get("type") in (
        "invalid_request_error",
    ):
        return refused
    return UpstreamError(
        "The image backend failed while streaming" + (f": {detail}" if detail else ".")
    )


class _Event(msgspec.Struct):
    type: str = ""
    b64_json: msgspec.Raw = msgspec.Raw(b'""')
    partial_image_index: Any = None
    usage: Any = None
    error: Any = None


_EVENT = msgspec.json.Decoder(_Event)


class _Item(msgspec.Struct):
    #: The JSON value as the upstream wrote it, a view of the answer's buffer: the image
    #: is checked and sent on from there, never decoded into a Python string.
    b64_json: msgspec.Raw = msgspec.Raw()
    url: Any = None
    revised_prompt: Any = None


class _CheckedItem(_Item):
    """An item whose ``b64_json`` :func:`decode_answer` decoded whole, as strict base64, to
    find where it ends: made only by that function, never by the decoder, so nothing an
    upstream writes makes one. Its image is not decoded whole a second time."""


class _Answer(msgspec.Struct):
    data: list[_Item]


_ANSWER = msgspec.json.Decoder(_Answer)


#: A ``b64_json`` key, up to the opening quote of its string.
_B64_JSON_KEY = re.compile(rb'"b64_json"[ \t\n\r]*:[ \t\n\r]*"')
#: More quotes than an Images API answer holds: past them, the answer is left to msgspec.
_MAX_QUOTES = 256


def decode_answer(body: bytes | bytearray) -> _Answer:
    """An Images API answer as msgspec decodes it, its ``b64_json`` strings found by
    ``bytes.find``: the one part of the answer's parsing written by hand, because a
    measurement says so.

    msgspec finds where a string ends byte by byte: 0.33 ms for the 1.4 MB of base64 of a
    1 MiB image, 18% of the gateway's CPU in a ``perf`` profile of the image benchmark.
    Base64 has no ``"``, so the string's end is the next quote: ``bytes.find`` (memchr)
    finds it in 0.016 ms, and pybase64 checks the text in between in 0.06 ms. An answer
    with one such image is parsed in 0.08 ms instead of 0.33, with four in 0.34 instead
    of 1.4 (``python -m bench.answer_parse``; BENCHMARKS.md, "Image relay").

    msgspec still parses everything else: each ``b64_json`` string whose text is strict
    base64 (so: no quote, backslash or control character) is replaced by a marker
    ``"#<i>"``, msgspec decodes the short skeleton, and each marker, found as an item's
    ``b64_json``, becomes a view of the answer's own string, in a :class:`_CheckedItem`:
    its image is made without decoding it whole again. A replaced string is still a
    string, so the skeleton decodes iff the answer does, to the same values. Other strings
    (escapes, a ``data:`` URL, not base64) stay in the skeleton, for msgspec; anything
    else unusual (another ``"#`` in the skeleton, a marker that is not an item's
    ``b64_json``, a skeleton msgspec refuses) and msgspec decodes the whole answer, as it
    did before: the same results, the same errors.

    Raises:
        msgspec.DecodeError: as ``msgspec.json.Decoder(_Answer).decode(body)``.
    """
    view = memoryview(body)
    pieces: list[bytes | memoryview] = []
    strings: list[memoryview] = []
    start = 0
    quote = body.find(b'"')
    for _ in range(_MAX_QUOTES):  # from quote to quote (memchr): a regex reads every byte
        if quote < 0:
            break
        key = _B64_JSON_KEY.match(body, quote)
        if key is None:
            quote = body.find(b'"', quote + 1)
            continue
        opening = key.end() - 1
        closing = body.find(b'"', opening + 1)
        if closing < 0:
            break
        try:
            base64_codec.decode(view[opening + 1 : closing])
        except base64_codec.Base64Error:  # escapes, a data: URL, no base64: msgspec's
            quote = closing
            continue
        pieces += (view[start:opening], b'"#%d"' % len(strings))
        strings.append(view[opening : closing + 1])
        start = closing + 1
        quote = body.find(b'"', start)
    if not strings:
        return _ANSWER.decode(body)
    pieces.append(view[start:])
    skeleton = b"".join(pieces)
    if skeleton.count(b'"#') != len(strings):
        return _ANSWER.decode(body)
    try:
        answer = _ANSWER.decode(skeleton)
    except msgspec.DecodeError:
        return _ANSWER.decode(body)  # raises the answer's own error
    found = 0
    for position, item in enumerate(answer.data):
        token = memoryview(item.b64_json)
        if bytes(token[:2]) == b'"#':  # a marker: the skeleton has no other ``"#``
            text = msgspec.Raw(strings[int(bytes(token[2:-1]))])
            answer.data[position] = _CheckedItem(text, item.url, item.revised_prompt)
            found += 1
    if found != len(strings):
        return _ANSWER.decode(body)
    return answer
