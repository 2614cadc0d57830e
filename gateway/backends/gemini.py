"""The ``gemini`` backend: Google's Gemini image models over the Generative Language API.

``POST {base_url}/models/{model}:generateContent`` with the key in ``x-goog-api-key``.
One call makes one image, so ``n > 1`` makes ``n`` concurrent calls and returns the
images of those that succeeded (fewer when some failed; an error only when all did).
The requested size picks ``generationConfig.imageConfig.aspectRatio``; Gemini chooses
the pixels, so the default ``sizes`` are the ones it makes for each aspect ratio
(``size: auto`` is 1024x1024: 1:1). Gemini has no per-request quality, style, format or
moderation settings, so the backend accepts only their defaults (``auto``, ``png``:
:class:`~gateway.backends.capabilities.Capabilities`) and does not stream.

Edits send the prompt then each input image as an ``inlineData`` part (Gemini edits what
it is shown); Gemini takes no mask, so a mask goes as one more image, named as such in
the text. A variation is the image with a request for a variation of it.

Options: ``base_url`` (default ``https://generativelanguage.googleapis.com/v1beta``),
``model`` (default ``gemini-2.5-flash-image``), ``api_key_env`` (required), ``sizes``
(each near one of Gemini's aspect ratios), ``timeout_seconds``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

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
from gateway.backends.upstream import (
    Upstream,
    env_option,
    gather_successes,
    image_from_base64,
    json_limit,
    read_secret,
    request_headers,
    text_option,
    url_option,
)
from gateway.config import ConfigError
from gateway.errors import ContentPolicyViolation, UpstreamError, UpstreamRefused

__all__ = ["GeminiBackend"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
DEFAULT_MODEL = "gemini-2.5-flash-image"
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
#: How far (as a ratio) a size may be from the aspect ratio it is sent as.
_RATIO_TOLERANCE = 1.05
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENUM = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
#: Block and finish reasons by which Gemini says the prompt or image broke its policy:
#: the request's own fault (400 ``content_policy_violation``), not the upstream's.
_POLICY_REASONS = frozenset(
    {"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST"}
)


def aspect_ratio(width: int, height: int) -> str | None:
    """The Gemini aspect ratio nearest ``width:height``, if near enough."""

    def distance(ratio: str) -> float:
        a, b = (int(v) for v in ratio.split(":"))
        return abs(math.log(width / height) - math.log(a / b))

    best = min(ASPECT_RATIOS, key=distance)
    return best if distance(best) <= math.log(_RATIO_TOLERANCE) else None


_MASK_NOTE = (
    "\n\nThe last image is a mask: change only where it is transparent, keep the rest"
    " of the first image as it is."
)
_VARIATION_TEXT = "Make a variation of this image: the same subject and style, a new take."


class GeminiBackend(ImageBackend):
    operations = frozenset({GENERATE, EDIT, VARIATION})
    options = ("base_url", "model", "api_key_env", "sizes", "timeout_seconds")
    default_sizes = (
        "1024x1024",
        "832x1248",
        "1248x832",
        "864x1184",
        "1184x864",
        "896x1152",
        "1152x896",
        "768x1344",
        "1344x768",
        "1536x672",
    )

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        for width, height in sorted(self.sizes):
            if aspect_ratio(width, height) is None:
                raise ConfigError(
                    f"backends.{name}.sizes: '{width}x{height}' is not near one of Gemini's"
                    f" aspect ratios ({', '.join(ASPECT_RATIOS)})"
                )
        base_url = url_option(name, options, "base_url", DEFAULT_BASE_URL)
        model = text_option(name, options, "model", DEFAULT_MODEL) or DEFAULT_MODEL
        model = model.removeprefix("models/")
        if not _MODEL_NAME.match(model):
            raise ConfigError(f"backends.{name}.model: must be a model name like {DEFAULT_MODEL}")
        self._url = f"{base_url}/models/{model}:generateContent"
        self._api_key_env = env_option(name, options, "api_key_env", required=True)
        self._upstream: Upstream | None = None

    def check_environment(self, environ: Mapping[str, str]) -> None:
        assert self._api_key_env is not None
        read_secret(self.name, "api_key_env", self._api_key_env, environ)

    async def start(self, context: BackendContext) -> None:
        assert self._api_key_env is not None
        key = read_secret(self.name, "api_key_env", self._api_key_env)
        self._upstream = Upstream(
            context,
            name=self.name,
            timeout_seconds=self.timeout_seconds,
            headers={"x-goog-api-key": key},
            secrets=[key],
            credentials_rejected=_key_invalid,
        )

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        upstream = self._upstream
        assert upstream is not None, "start() was not called"
        config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
        ratio = aspect_ratio(request.width, request.height)
        if ratio is not None:
            config["imageConfig"] = {"aspectRatio": ratio}
        body = {"contents": [{"parts": _parts(request)}], "generationConfig": config}
        headers = request_headers(request)

        async def one_call() -> list[GeneratedImage]:
            payload = await upstream.call(
                "POST", self._url, body=body, headers=headers, max_bytes=json_limit(1)
            )
            return _images_from(payload)

        batches = await gather_successes(self.name, [one_call() for _ in range(request.n)])
        return [image for batch in batches for image in batch][: request.n]


def _parts(request: ImageRequest) -> list[dict[str, Any]]:
    """The request's text, then its images (and mask) as inline data."""
    if request.operation == VARIATION:
        text = _VARIATION_TEXT
    else:
        text = request.prompt + (_MASK_NOTE if request.mask is not None else "")
    images = [*request.images, *([request.mask] if request.mask is not None else [])]
    return [
        {"text": text},
        *(
            {
                "inlineData": {
                    "mimeType": image.media_type,
                    "data": str(b64encode(image.data), "ascii"),
                }
            }
            for image in images
        ),
    ]


def _images_from(payload: Any) -> list[GeneratedImage]:
    """The images of ``candidates[0]``; :class:`UpstreamError` if it has none."""
    if not isinstance(payload, dict):
        raise UpstreamError("The image backend sent a malformed response.")
    candidates = payload.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        feedback = payload.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if isinstance(reason, str) and _ENUM.match(reason):
            refused = ContentPolicyViolation if reason in _POLICY_REASONS else UpstreamRefused
            raise refused(f"The image backend refused the prompt ({reason}).", param="prompt")
        raise UpstreamError("The image backend sent a malformed response.")
    candidate = candidates[0]
    if not isinstance(candidate, dict):
        raise UpstreamError("The image backend sent a malformed response.")
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    images = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought"):  # drafts of thinking models
            continue
        inline = part.get("inlineData", part.get("inline_data"))
        if not isinstance(inline, dict):
            continue
        mime_type = inline.get("mimeType", inline.get("mime_type"))
        if isinstance(mime_type, str) and not mime_type.startswith("image/"):
            continue
        images.append(image_from_base64(inline.get("data")))
    if not images:
        reason = candidate.get("finishReason", candidate.get("finish_reason"))
        if isinstance(reason, str) and reason in _POLICY_REASONS:
            raise ContentPolicyViolation(f"The image backend refused to make the image ({reason}).")
        if isinstance(reason, str) and _ENUM.match(reason) and reason != "STOP":
            raise UpstreamError(f"The image backend made no image ({reason}).")
        raise UpstreamError("The image backend made no image.")
    return images


def _key_invalid(payload: Any) -> bool:
    """Google answers a bad key with 400 ``INVALID_ARGUMENT``, reason ``API_KEY_INVALID``."""
    error = payload.get("error") if isinstance(payload, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return isinstance(details, list) and any(
        isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details
    )
