"""The openai backend's own behaviour: URL results, revised prompts, gpt-image models."""

from __future__ import annotations

import itertools

import pytest

from gateway.backends import upstream
from gateway.backends.base import EDIT, VARIATION, BackendContext
from gateway.backends.openai import OpenAIBackend
from gateway.errors import UpstreamError
from tests.support.backend_cases import OPENAI_KEY, image_request, input_image
from tests.support.images import pattern_png, rgba_png
from tests.support.providers import OpenAIFake, Serve, decode_png


@pytest.fixture
async def fake(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> OpenAIFake:
    monkeypatch.setenv("TEST_OPENAI_KEY", OPENAI_KEY)
    return await serve(OpenAIFake(OPENAI_KEY))


async def started(fake: OpenAIFake, context: BackendContext, **options: object) -> OpenAIBackend:
    backend = OpenAIBackend(
        "x", {"base_url": fake.base_url, "api_key_env": "TEST_OPENAI_KEY", **options}
    )
    await backend.start(context)
    return backend


async def test_url_results_are_downloaded_without_credentials(
    fake: OpenAIFake, context: BackendContext
) -> None:
    fake.as_urls = True
    backend = await started(fake, context, model="dall-e-2")

    images = await backend.generate(image_request(n=2))

    assert [decode_png(image.data) for image in images] == [(64, 64), (64, 64)]
    assert len(fake.downloads()) == 2
    assert all(d.credentials() == {} for d in fake.downloads())
    assert images[0].revised_prompt == "a lighthouse at dawn, in watercolour"


async def test_revised_prompt_is_kept(fake: OpenAIFake, context: BackendContext) -> None:
    backend = await started(fake, context)

    [image] = await backend.generate(image_request())

    assert image.revised_prompt == "a lighthouse at dawn, in watercolour"


async def test_clients_model_is_used_and_gpt_image_gets_no_response_format(
    fake: OpenAIFake, context: BackendContext
) -> None:
    backend = await started(fake, context)  # no model option

    images = await backend.generate(image_request(model="gpt-image-1"))

    assert len(images) == 1
    [call] = fake.api_requests()
    assert call.body["model"] == "gpt-image-1"
    assert "response_format" not in call.body


async def test_organization_is_sent(fake: OpenAIFake, context: BackendContext) -> None:
    backend = await started(fake, context, organization="org-gateway")

    await backend.generate(image_request())

    assert fake.api_requests()[0].headers["OpenAI-Organization"] == "org-gateway"


async def test_without_api_key_env_no_authorization_is_sent(
    fake: OpenAIFake, context: BackendContext
) -> None:
    backend = OpenAIBackend("x", {"base_url": fake.base_url})
    await backend.start(context)

    with pytest.raises(UpstreamError, match="credentials"):
        await backend.generate(image_request())

    assert fake.api_requests()[0].credentials() == {}


async def test_a_failed_download_returns_the_other_images(
    fake: OpenAIFake, context: BackendContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.as_urls = True
    real_file_url = fake.file_url
    count = itertools.count()

    def second_one_missing(data: bytes) -> str:
        url = real_file_url(data)
        return url + ".missing" if next(count) == 1 else url

    monkeypatch.setattr(fake, "file_url", second_one_missing)
    backend = await started(fake, context)

    images = await backend.generate(image_request(n=3))

    assert len(images) == 2


async def test_download_larger_than_the_limit_is_refused(
    fake: OpenAIFake, context: BackendContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.as_urls = True
    monkeypatch.setattr(upstream, "MAX_IMAGE_BYTES", 64)
    backend = await started(fake, context)

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(image_request())

    assert caught.value.message == upstream.IMAGE_FETCH_FAILED


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://files.example/a.png"])
async def test_urls_that_are_not_http_are_not_fetched(
    fake: OpenAIFake, context: BackendContext, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    fake.as_urls = True
    monkeypatch.setattr(fake, "file_url", lambda data: url)
    backend = await started(fake, context)

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(image_request())

    assert caught.value.message == upstream.IMAGE_FETCH_FAILED


async def test_edit_is_sent_as_openai_multipart(fake: OpenAIFake, context: BackendContext) -> None:
    backend = await started(fake, context)
    first, second = pattern_png(32, 32), pattern_png(32, 32, 1)
    mask = rgba_png(32, 32, (0, 0, 16, 16))
    request = image_request(
        n=2,
        model="gpt-image-1",
        operation=EDIT,
        images=(input_image(first), input_image(second)),
        mask=input_image(mask, "mask.png"),
        quality="high",
        output_format="png",
        input_fidelity="high",
        user="user-42",
        partial_images=2,  # only for a stream: not sent
    )

    images = await backend.generate(request)

    assert [decode_png(image.data) for image in images] == [(64, 64), (64, 64)]
    [call] = fake.api_requests()
    assert call.path == "/v1/images/edits"
    assert call.credentials() == {"authorization": f"Bearer {OPENAI_KEY}"}
    assert call.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert call.body == {
        "model": ["gpt-image-1"],
        "n": ["2"],
        "size": ["64x64"],
        "prompt": ["a lighthouse at dawn"],
        "quality": ["high"],
        "output_format": ["png"],
        "input_fidelity": ["high"],
        "user": ["user-42"],
        "image[]": [first, second],
        "mask": [mask],
    }


async def test_streamed_edit_is_the_multipart_form_with_stream_true(
    fake: OpenAIFake, context: BackendContext
) -> None:
    backend = await started(fake, context)
    source = pattern_png(32, 32)
    request = image_request(
        model="gpt-image-1",
        operation=EDIT,
        images=(input_image(source),),
        stream=True,
        partial_images=2,
    )

    try:
        events = [event async for event in backend.stream(request)]
    finally:
        await backend.close()

    assert [(event.index, event.partial_index) for event in events] == [(0, 0), (0, 1), (0, None)]
    assert all(decode_png(event.image.data) == (64, 64) for event in events)
    [call] = fake.api_requests()
    assert call.path == "/v1/images/edits"
    assert call.headers["Accept"] == "text/event-stream"
    assert call.body == {
        "model": ["gpt-image-1"],
        "n": ["1"],
        "size": ["64x64"],
        "prompt": ["a lighthouse at dawn"],
        "stream": ["true"],
        "partial_images": ["2"],
        "image": [source],
    }


async def test_variation_is_sent_as_openai_multipart(
    fake: OpenAIFake, context: BackendContext
) -> None:
    backend = await started(fake, context, model="dall-e-2")
    source = pattern_png(32, 32)

    [image] = await backend.generate(
        image_request(prompt="", operation=VARIATION, images=(input_image(source),))
    )

    assert decode_png(image.data) == (64, 64)
    [call] = fake.api_requests()
    assert call.path == "/v1/images/variations"
    assert call.body == {
        "model": ["dall-e-2"],
        "n": ["1"],
        "size": ["64x64"],
        "response_format": ["b64_json"],
        "image": [source],
    }
