"""The gemini backend's own behaviour: one call per image, partial success, aspect ratios."""

from __future__ import annotations

import asyncio
import base64

import pytest

from gateway.backends.base import EDIT, VARIATION, BackendContext
from gateway.backends.gemini import GeminiBackend, aspect_ratio
from gateway.config import ConfigError
from gateway.errors import UpstreamError, UpstreamRefused
from tests.support.backend_cases import GEMINI_KEY, image_request, input_image
from tests.support.images import encode, pattern_png, rgba_png
from tests.support.providers import GeminiFake, Serve, decode_png


@pytest.fixture
async def fake(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> GeminiFake:
    monkeypatch.setenv("TEST_GEMINI_KEY", GEMINI_KEY)
    return await serve(GeminiFake(GEMINI_KEY))


async def started(fake: GeminiFake, context: BackendContext, **options: object) -> GeminiBackend:
    backend = GeminiBackend(
        "x", {"base_url": fake.base_url, "api_key_env": "TEST_GEMINI_KEY", **options}
    )
    await backend.start(context)
    return backend


async def test_several_images_make_that_many_concurrent_calls(
    fake: GeminiFake, context: BackendContext
) -> None:
    fake.wait_for_calls = 3  # no call is answered before all three have arrived
    backend = await started(fake, context)

    async with asyncio.timeout(5):
        images = await backend.generate(image_request(n=3))

    assert len(images) == 3
    assert fake.calls == 3


async def test_partial_failure_returns_the_images_made(
    fake: GeminiFake, context: BackendContext
) -> None:
    fake.failing_calls = {1}
    backend = await started(fake, context)

    images = await backend.generate(image_request(n=3))

    assert len(images) == 2
    assert all(decode_png(image.data) for image in images)


async def test_all_calls_failing_is_an_upstream_error(
    fake: GeminiFake, context: BackendContext
) -> None:
    fake.failing_calls = {0, 1}
    backend = await started(fake, context)

    with pytest.raises(UpstreamError, match="HTTP 500"):
        await backend.generate(image_request(n=2))


async def test_snake_case_inline_data_is_accepted(
    fake: GeminiFake, context: BackendContext
) -> None:
    fake.snake_case = True
    backend = await started(fake, context)

    [image] = await backend.generate(image_request())

    assert decode_png(image.data) == (16, 16)


async def test_thought_images_are_skipped(fake: GeminiFake, context: BackendContext) -> None:
    fake.thought_image = True
    backend = await started(fake, context)

    [image] = await backend.generate(image_request())

    assert decode_png(image.data) == (16, 16)  # not the 8x8 draft


async def test_blocked_prompt_says_why(fake: GeminiFake, context: BackendContext) -> None:
    fake.block_reason = "PROHIBITED_CONTENT"
    backend = await started(fake, context)

    with pytest.raises(
        UpstreamRefused, match=r"refused the prompt \(PROHIBITED_CONTENT\)"
    ) as caught:
        await backend.generate(image_request())
    # The request's own fault: a 400 for the client, not counted against the upstream.
    assert (caught.value.status, caught.value.code) == (400, "content_policy_violation")


async def test_size_picks_the_aspect_ratio(fake: GeminiFake, context: BackendContext) -> None:
    backend = await started(fake, context)

    [image] = await backend.generate(image_request(width=1344, height=768))

    body = fake.api_requests()[0].body
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}
    assert decode_png(image.data) == (256, 144)


async def test_model_option_picks_the_path(fake: GeminiFake, context: BackendContext) -> None:
    fake.model = "gemini-3-pro-image-preview"
    backend = await started(fake, context, model="models/gemini-3-pro-image-preview")

    assert len(await backend.generate(image_request())) == 1
    assert (
        fake.api_requests()[0].path == "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    )


def test_default_sizes_all_have_an_aspect_ratio() -> None:
    backend = GeminiBackend("x", {"api_key_env": "GEMINI_API_KEY"})

    assert len(backend.sizes) == 10
    assert {aspect_ratio(w, h) for w, h in backend.sizes} == {
        "1:1",
        "2:3",
        "3:2",
        "3:4",
        "4:3",
        "4:5",
        "5:4",
        "9:16",
        "16:9",
        "21:9",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "backends.x.api_key_env: required, the name of an environment variable"),
        ({"model": "../admin"}, "backends.x.model: must be a model name"),
        ({"sizes": ["1000x100"]}, "backends.x.sizes: '1000x100' is not near one of Gemini's"),
    ],
)
def test_option_errors(options: dict[str, object], message: str) -> None:
    if options:
        options = {"api_key_env": "GEMINI_API_KEY", **options}
    with pytest.raises(ConfigError) as caught:
        GeminiBackend("x", options)

    assert str(caught.value).startswith(message)


async def test_edit_sends_image_parts_after_the_text(
    fake: GeminiFake, context: BackendContext
) -> None:
    backend = await started(fake, context)
    source, mask = encode("JPEG", 32, 32), rgba_png(32, 32, (0, 0, 16, 16))

    [image] = await backend.generate(
        image_request(
            operation=EDIT, images=(input_image(source, "a.jpg"),), mask=input_image(mask)
        )
    )

    assert image.data[:8] == b"\x89PNG\r\n\x1a\n"
    [text, picture, masked] = fake.api_requests()[0].body["contents"][0]["parts"]
    assert text["text"].startswith("a lighthouse at dawn\n\nThe last image is a mask")
    assert picture == {
        "inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(source).decode()}
    }
    assert masked["inlineData"]["data"] == base64.b64encode(mask).decode()


async def test_variation_asks_for_a_variation(fake: GeminiFake, context: BackendContext) -> None:
    backend = await started(fake, context)

    await backend.generate(
        image_request(prompt="", operation=VARIATION, images=(input_image(pattern_png(8, 8)),))
    )

    [text, _picture] = fake.api_requests()[0].body["contents"][0]["parts"]
    assert text["text"].startswith("Make a variation of this image")
