"""The ``openai`` backend: OpenAI's Images API, or any upstream compatible with it.

``POST {base_url}/images/generations`` with ``{"model", "prompt", "n", "size",
"response_format": "b64_json"}``; edits as ``POST {base_url}/images/edits``, multipart
(``image``, or ``image[]`` for several, ``mask``, ``prompt``, ``n``, ``size``, and the
edit's ``quality``, ``background``, ``output_format``, ``output_compression``,
``input_fidelity``); variations as ``POST {base_url}/images/variations`` (``image``,
``n``, ``size``). Images come back as ``data[].b64_json``, or as
``data[].url``, which is downloaded without credentials, at most 20 MB, under the egress
policy (no loopback, private or link-local targets unless ``egress.allow`` lists them;
see :mod:`gateway.egress`). ``revised_prompt`` is kept. ``gpt-image-*`` models always
answer in base64 and refuse a ``response_format``, so none is sent for them.

Options: ``base_url`` (default ``https://api.openai.com/v1``), ``api_key_env`` (the
environment variable holding the upstream's key, sent as ``Authorization: Bearer``;
leave it out for an upstream without keys), ``model`` (the upstream's model name;
default: the client's), ``organization`` (sent as ``OpenAI-Organization``), ``sizes``,
``timeout_seconds``, ``max_n_per_call`` (default 1 for ``dall-e-3``, else no limit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway.backends.base import (
    EDIT,
    GENERATE,
    VARIATION,
    BackendContext,
    GeneratedImage,
    ImageBackend,
    ImageRequest,
)
from gateway.backends.upstream import (
    Upstream,
    env_option,
    gather_successes,
    image_from_json_string,
    json_limit,
    multipart_form,
    read_secret,
    request_headers,
    text_option,
    url_option,
)
from gateway.errors import GatewayError, UpstreamError

__all__ = ["OpenAIBackend"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Upstream models that accept only ``n=1``.
_ONE_PER_CALL = frozenset({"dall-e-3"})


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

    def images_per_call(self, request: ImageRequest) -> int | None:
        """dall-e-3 answers only ``n=1``: unless ``max_n_per_call`` says otherwise, its
        calls are fanned out one image each."""
        if self.max_n_per_call is None and (self._model or request.model) in _ONE_PER_CALL:
            return 1
        return self.max_n_per_call

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        """The JSON sent upstream for ``request``."""
        model = self._model or request.model
        body: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "n": request.n,
            "size": f"{request.width}x{request.height}",
        }
        if not model.startswith("gpt-image"):
            body["response_format"] = "b64_json"
        return body

    def request_form(self, request: ImageRequest) -> tuple[bytes, str]:
        """The multipart form sent upstream for an edit or a variation ``request``."""
        model = self._model or request.model
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
            fields += [
                (key, value)
                for key, value in request.options.items()
                if key != "partial_images"  # only for streaming
            ]
            if request.mask is not None:
                files.append(("mask", request.mask))
        return multipart_form(fields, files)

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        upstream = self._upstream
        assert upstream is not None, "start() was not called"
        if request.operation == GENERATE:
            url, body, content = self._url, self.request_body(request), None
        else:
            url, body, content = self._urls[request.operation], None, self.request_form(request)
        answer: _Answer = await upstream.call(
            "POST",
            url,
            body=body,
            content=content,
            headers=request_headers(request),
            max_bytes=json_limit(request.n),
            decoder=_ANSWER,
        )
        if not answer.data:
            raise UpstreamError("The image backend returned no images.")
        images: list[GeneratedImage] = []
        urls: list[tuple[str, str | None]] = []
        for item in answer.data[: request.n]:
            revised = item.revised_prompt
            revised = revised if isinstance(revised, str) else None
            token = memoryview(item.b64_json)
            if token and bytes(token[:4]) != b"null":
                images.append(image_from_json_string(token, revised_prompt=revised))
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


class _Item(msgspec.Struct):
    #: The JSON value as the upstream wrote it, a view of the answer's buffer: the image
    #: is checked and sent on from there, never decoded into a Python string.
    b64_json: msgspec.Raw = msgspec.Raw()
    url: Any = None
    revised_prompt: Any = None


class _Answer(msgspec.Struct):
    data: list[_Item]


_ANSWER = msgspec.json.Decoder(_Answer)
