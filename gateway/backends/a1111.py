"""The ``a1111`` backend: Stable Diffusion WebUI (AUTOMATIC1111, Forge) over its API.

``POST {base_url}/sdapi/v1/txt2img``; the answer's ``images`` are base64 PNGs. When
grids are enabled the WebUI puts a grid of the batch before the images; the ``info``
JSON then says ``"index_of_first_image": 1``. The grid is dropped (also when ``info``
is missing but there are more images than asked for), so it is never charged.

Edits and variations go to ``POST {base_url}/sdapi/v1/img2img`` with the input images as
``init_images`` (base64) and ``denoising_strength``; a variation keeps an empty prompt.
An edit's mask is sent as it came (``mask``, an RGBA PNG): the WebUI reads an RGBA
mask's alpha channel (opaque: inpaint), so ``inpainting_mask_invert: 1`` makes it
inpaint where the mask is transparent, as OpenAI's masks mean.

Options: ``base_url`` (required), ``steps`` (20), ``cfg_scale`` (7.0), ``sampler``
(``"Euler a"``), ``denoising_strength`` (0.75: how far an edit or a variation may move
from its input, 0 to 1), ``username_env`` and ``password_env`` (environment variables holding
the WebUI's ``--api-auth`` credentials; both or neither), ``sizes`` (each a multiple of
8), ``timeout_seconds``.

``quality`` sets the sampling steps: ``low`` half of ``steps``, ``medium``, ``standard``
and ``auto`` ``steps``, ``high`` one and a half times, ``hd`` twice. The WebUI encodes
PNGs only (its format is a server setting), so ``output_format`` is ``png``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.backends.base import (
    EDIT,
    GENERATE,
    VARIATION,
    BackendContext,
    GeneratedImage,
    ImageBackend,
    ImageRequest,
)
from gateway.backends.base64_codec import encode as b64encode
from gateway.backends.capabilities import CHOICES, Capabilities
from gateway.backends.upstream import (
    Upstream,
    basic_auth,
    env_option,
    float_option,
    image_from_base64,
    int_option,
    json_limit,
    read_secret,
    request_headers,
    text_option,
    url_option,
)
from gateway.config import ConfigError
from gateway.errors import UpstreamError

__all__ = ["QUALITY_STEPS", "A1111Backend"]

#: ``quality`` -> a factor of the configured ``steps``.
QUALITY_STEPS = {
    "auto": 1.0,
    "standard": 1.0,
    "medium": 1.0,
    "low": 0.5,
    "high": 1.5,
    "hd": 2.0,
}


class A1111Backend(ImageBackend):
    operations = frozenset({GENERATE, EDIT, VARIATION})
    options = (
        "base_url",
        "steps",
        "cfg_scale",
        "sampler",
        "denoising_strength",
        "username_env",
        "password_env",
        "sizes",
        "timeout_seconds",
    )
    capabilities = Capabilities(quality=CHOICES["quality"])

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        for width, height in self.sizes:
            if width % 8 or height % 8:
                raise ConfigError(
                    f"backends.{name}.sizes: '{width}x{height}' is not a multiple of 8"
                    " (Stable Diffusion works in 8-pixel blocks)"
                )
        base_url = url_option(name, options, "base_url")
        self._url = base_url + "/sdapi/v1/txt2img"
        self._img2img_url = base_url + "/sdapi/v1/img2img"
        self._denoising = float_option(name, options, "denoising_strength", 0.75)
        if not 0 <= self._denoising <= 1:
            raise ConfigError(f"backends.{name}.denoising_strength: must be from 0 to 1")
        self._steps = int_option(name, options, "steps", 20, minimum=1)
        self._cfg_scale = float_option(name, options, "cfg_scale", 7.0)
        self._sampler = text_option(name, options, "sampler", "Euler a")
        self._username_env = env_option(name, options, "username_env", required=False)
        self._password_env = env_option(name, options, "password_env", required=False)
        if self._username_env and not self._password_env:
            raise ConfigError(f"backends.{name}.password_env: required with username_env")
        if self._password_env and not self._username_env:
            raise ConfigError(f"backends.{name}.username_env: required with password_env")
        self._upstream: Upstream | None = None

    def _credentials(self, environ: Mapping[str, str]) -> tuple[str, str] | None:
        """The WebUI's user name and password, if it has them."""
        if not (self._username_env and self._password_env):
            return None
        username = read_secret(self.name, "username_env", self._username_env, environ)
        password = read_secret(self.name, "password_env", self._password_env, environ)
        if ":" in username:
            raise ConfigError(
                f"backends.{self.name}.username_env: the user name must not contain ':'"
            )
        return username, password

    def check_environment(self, environ: Mapping[str, str]) -> None:
        self._credentials(environ)

    async def start(self, context: BackendContext) -> None:
        headers: dict[str, str] = {}
        secrets: list[str] = []
        credentials = self._credentials(os.environ)
        if credentials is not None:
            username, password = credentials
            headers["Authorization"] = basic_auth(username, password)
            secrets += [password, headers["Authorization"].removeprefix("Basic ")]
        self._upstream = Upstream(
            context,
            name=self.name,
            timeout_seconds=self.timeout_seconds,
            headers=headers,
            secrets=secrets,
        )

    def steps_for(self, request: ImageRequest) -> int:
        """The sampling steps for ``request``'s ``quality``."""
        factor = QUALITY_STEPS[request.quality or "auto"]
        return max(1, round(self._steps * factor))

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        upstream = self._upstream
        assert upstream is not None, "start() was not called"
        body = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or "",
            "width": request.width,
            "height": request.height,
            "seed": request.seed if request.seed is not None else -1,
            "batch_size": request.n,
            "n_iter": 1,
            "steps": self.steps_for(request),
            "cfg_scale": self._cfg_scale,
            "sampler_name": self._sampler,
            "send_images": True,
            "save_images": False,
        }
        url = self._url
        if request.images:
            url = self._img2img_url
            body["init_images"] = [str(b64encode(image.data), "ascii") for image in request.images]
            body["denoising_strength"] = self._denoising
            if request.mask is not None:
                body["mask"] = str(b64encode(request.mask.data), "ascii")
                body["inpainting_mask_invert"] = 1
        payload = await upstream.call(
            "POST",
            url,
            body=body,
            headers=request_headers(request),
            max_bytes=json_limit(request.n + 1),  # room for a grid
        )
        if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
            raise UpstreamError("The image backend sent a malformed response.")
        encoded: list[Any] = payload["images"]
        first = _index_of_first_image(payload.get("info"), len(encoded), request.n)
        images = [image_from_base64(item) for item in encoded[first : first + request.n]]
        if not images:
            raise UpstreamError("The image backend returned no images.")
        return images


def _index_of_first_image(info: Any, count: int, n: int) -> int:
    """How many grid images lead the list: from ``info``, else by counting."""
    if isinstance(info, str):
        try:
            info = orjson.loads(info)
        except orjson.JSONDecodeError:
            info = None
    if isinstance(info, dict):
        first = info.get("index_of_first_image")
        if isinstance(first, int) and not isinstance(first, bool) and 0 <= first < count:
            return first
    return 1 if count > n else 0
