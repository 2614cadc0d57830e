"""The contract cases: each backend type paired with a fake of its upstream.

A case knows how to configure its backend against a running fake, which credentials
the upstream must see (and nothing else), and what the upstream's API request must
look like for a given :class:`ImageRequest`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.backends.a1111 import A1111Backend
from gateway.backends.base import BackendContext, ImageBackend, ImageRequest, InputImage
from gateway.backends.gemini import GeminiBackend
from gateway.backends.openai import OpenAIBackend
from gateway.backends.replicate import ReplicateBackend
from gateway.media.inspect import inspect_image
from tests.support.providers import (
    A1111Fake,
    GeminiFake,
    OpenAIFake,
    ProviderFake,
    Recorded,
    ReplicateFake,
)

__all__ = ["CASES", "Case", "image_request", "input_image"]

OPENAI_KEY = "sk-upstream-openai-0123456789abcdef"
A1111_USER = "webui"
A1111_PASSWORD = "upstream-a1111-password-0123"
GEMINI_KEY = "AIzaSyUpstreamGemini0123456789abcdefghij"
REPLICATE_KEY = "r8_UpstreamReplicate0123456789abcdef"


def image_request(n: int = 1, **changes: Any) -> ImageRequest:
    fields: dict[str, Any] = {
        "prompt": "a lighthouse at dawn",
        "n": n,
        "width": 64,
        "height": 64,
        "model": "client-model",
        "request_id": "req-0123456789",
        **changes,
    }
    return ImageRequest(**fields)


def input_image(data: bytes, filename: str = "image0.png") -> InputImage:
    """An uploaded PNG as the gateway hands it to a backend (checked, measured)."""
    info = inspect_image(data)
    return InputImage(data, info.media_type, info.width, info.height, filename)


@dataclass(frozen=True)
class Case:
    id: str
    backend_type: type[ImageBackend]
    make_fake: Callable[[], ProviderFake]
    options: Callable[[ProviderFake], dict[str, Any]]
    #: The upstream credentials, by environment variable.
    env: dict[str, str]
    #: The option naming a credential's variable, and that variable.
    credential_option: str
    credential_env: str
    #: Credential headers (lower-case names) the upstream's API must see: exactly these.
    credentials: dict[str, str]
    check_request: Callable[[Recorded, ImageRequest], None]
    #: Upstream API calls that make ``n`` images.
    calls_for: Callable[[int], int] = field(default=lambda n: 1)

    def backend(self, fake: ProviderFake, **extra: Any) -> ImageBackend:
        return self.backend_type("x", {**self.options(fake), **extra})

    async def started(
        self, fake: ProviderFake, context: BackendContext, **extra: Any
    ) -> ImageBackend:
        backend = self.backend(fake, **extra)
        await backend.start(context)
        return backend


def _check_openai(recorded: Recorded, request: ImageRequest) -> None:
    assert (recorded.method, recorded.path) == ("POST", "/v1/images/generations")
    assert recorded.body == {
        "model": "dall-e-3",
        "prompt": request.prompt,
        "n": request.n,
        "size": f"{request.width}x{request.height}",
        "response_format": "b64_json",
    }
    assert recorded.headers["X-Request-ID"] == request.request_id


def _check_a1111(recorded: Recorded, request: ImageRequest) -> None:
    assert (recorded.method, recorded.path) == ("POST", "/sdapi/v1/txt2img")
    body = recorded.body
    assert {k: body[k] for k in body if k not in ("send_images", "save_images")} == {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "width": request.width,
        "height": request.height,
        "seed": -1 if request.seed is None else request.seed,
        "batch_size": request.n,
        "n_iter": 1,
        "steps": 20,
        "cfg_scale": 7.0,
        "sampler_name": "Euler a",
    }


def _check_gemini(recorded: Recorded, request: ImageRequest) -> None:
    assert recorded.method == "POST"
    assert recorded.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert recorded.body == {
        "contents": [{"parts": [{"text": request.prompt}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "1:1"},
        },
    }


def _check_replicate(recorded: Recorded, request: ImageRequest) -> None:
    assert recorded.method == "POST"
    assert recorded.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    expected_input: dict[str, Any] = {
        "prompt": request.prompt,
        "num_outputs": request.n,
        "width": request.width,
        "height": request.height,
    }
    if request.seed is not None:
        expected_input["seed"] = request.seed
    assert recorded.body == {"input": expected_input}
    assert recorded.headers["Prefer"] == "wait=5"  # half of timeout_seconds: 10


CASES = [
    Case(
        id="openai",
        backend_type=OpenAIBackend,
        make_fake=lambda: OpenAIFake(OPENAI_KEY),
        options=lambda fake: {
            "base_url": fake.base_url,
            "api_key_env": "TEST_OPENAI_KEY",
            "model": "dall-e-3",
            "timeout_seconds": 10,
        },
        env={"TEST_OPENAI_KEY": OPENAI_KEY},
        credential_option="api_key_env",
        credential_env="TEST_OPENAI_KEY",
        credentials={"authorization": f"Bearer {OPENAI_KEY}"},
        check_request=_check_openai,
    ),
    Case(
        id="a1111",
        backend_type=A1111Backend,
        make_fake=lambda: A1111Fake(A1111_USER, A1111_PASSWORD),
        options=lambda fake: {
            "base_url": fake.base_url,
            "username_env": "TEST_A1111_USER",
            "password_env": "TEST_A1111_PASSWORD",
            "timeout_seconds": 10,
        },
        env={"TEST_A1111_USER": A1111_USER, "TEST_A1111_PASSWORD": A1111_PASSWORD},
        credential_option="password_env",
        credential_env="TEST_A1111_PASSWORD",
        credentials={
            "authorization": "Basic "
            + base64.b64encode(f"{A1111_USER}:{A1111_PASSWORD}".encode()).decode()
        },
        check_request=_check_a1111,
    ),
    Case(
        id="gemini",
        backend_type=GeminiBackend,
        make_fake=lambda: GeminiFake(GEMINI_KEY),
        options=lambda fake: {
            "base_url": fake.base_url,
            "api_key_env": "TEST_GEMINI_KEY",
            "timeout_seconds": 10,
        },
        env={"TEST_GEMINI_KEY": GEMINI_KEY},
        credential_option="api_key_env",
        credential_env="TEST_GEMINI_KEY",
        credentials={"x-goog-api-key": GEMINI_KEY},
        check_request=_check_gemini,
        calls_for=lambda n: n,
    ),
    Case(
        id="replicate",
        backend_type=ReplicateBackend,
        make_fake=lambda: ReplicateFake(REPLICATE_KEY),
        options=lambda fake: {
            "base_url": fake.base_url,
            "api_key_env": "TEST_REPLICATE_TOKEN",
            "model": "black-forest-labs/flux-schnell",
            "timeout_seconds": 10,
            "poll_interval_seconds": 0.01,
        },
        env={"TEST_REPLICATE_TOKEN": REPLICATE_KEY},
        credential_option="api_key_env",
        credential_env="TEST_REPLICATE_TOKEN",
        credentials={"authorization": f"Bearer {REPLICATE_KEY}"},
        check_request=_check_replicate,
    ),
]
