"""The ``http`` backend: an upstream that already speaks this gateway's own format.

For another gateway, or an in-house service: ``POST {base_url}/images/generations``
with the OpenAI Images request body, ``b64_json`` images back. Options: ``base_url``
(required), ``model`` (the upstream's model name; default: the client's),
``api_key_env`` (name of an environment variable holding the upstream's key, sent as
``Authorization: Bearer``; never the client's key), ``sizes``, ``timeout_seconds``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from gateway.backends._http import (
    RETRYABLE_STATUSES,
    _read_limited,
    json_limit,
    retry_after_seconds,
)
from gateway.backends.base import BackendContext, GeneratedImage, ImageBackend, ImageRequest
from gateway.config import ConfigError
from gateway.errors import UpstreamError

__all__ = ["HttpBackend"]


class HttpBackend(ImageBackend):
    options = ("base_url", "model", "api_key_env", "sizes", "timeout_seconds")

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        base_url = options.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"backends.{name}.base_url: required, an http(s) URL")
        self._url = base_url.rstrip("/") + "/images/generations"
        model = options.get("model")
        if model is not None and not isinstance(model, str):
            raise ConfigError(f"backends.{name}.model: must be a string")
        self._model = model
        env = options.get("api_key_env")
        if env is not None and not isinstance(env, str):
            raise ConfigError(f"backends.{name}.api_key_env: must be an environment variable name")
        self._api_key_env = env
        self._http: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}

    async def start(self, context: BackendContext) -> None:
        self._http = context.http
        self._headers = {"Content-Type": "application/json"}
        if self._api_key_env:
            secret = os.environ.get(self._api_key_env)
            if not secret:
                raise ConfigError(
                    f"backends.{self.name}.api_key_env: {self._api_key_env} is not set"
                )
            self._headers["Authorization"] = f"Bearer {secret}"

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        assert self._http is not None, "start() was not called"
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "n": request.n,
            "size": f"{request.width}x{request.height}",
            "model": self._model or request.model,
            "response_format": "b64_json",
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.negative_prompt is not None:
            body["negative_prompt"] = request.negative_prompt
        headers = dict(self._headers)
        if request.request_id:
            headers["X-Request-ID"] = request.request_id
        try:
            async with self._http.post(
                self._url, json=body, headers=headers, allow_redirects=False
            ) as response:
                if 300 <= response.status < 400:
                    raise UpstreamError("The image backend answered with a redirect.")
                if response.status != 200:
                    raise UpstreamError(
                        f"The image backend answered with HTTP {response.status}.",
                        retryable=response.status in RETRYABLE_STATUSES,
                        retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                    )
                raw = await _read_limited(response, json_limit(request.n), truncate=False)
                payload = orjson.loads(raw)
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"The image backend could not be reached ({type(exc).__name__}).",
                retryable=isinstance(exc, aiohttp.ClientConnectionError),
            ) from None
        except (ValueError, orjson.JSONDecodeError):
            raise UpstreamError("The image backend sent a malformed response.") from None
        return _images_from(payload)


def _images_from(payload: Any) -> list[GeneratedImage]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise UpstreamError("The image backend sent a malformed response.")
    images = []
    for item in data:
        encoded = item.get("b64_json") if isinstance(item, dict) else None
        if not isinstance(encoded, str):
            raise UpstreamError("The image backend sent a malformed response.")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise UpstreamError("The image backend sent a malformed image.") from None
        revised = item.get("revised_prompt")
        images.append(
            GeneratedImage(raw, revised_prompt=revised if isinstance(revised, str) else None)
        )
    return images
