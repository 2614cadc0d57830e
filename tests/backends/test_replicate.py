"""The replicate backend's own behaviour: polling, failures, its deadline and cancel."""

from __future__ import annotations

import asyncio

import pytest

from gateway.backends.base import EDIT, VARIATION, BackendContext
from gateway.backends.replicate import ReplicateBackend
from gateway.config import ConfigError
from gateway.errors import UpstreamRefused, UpstreamTimeout
from tests.support.backend_cases import REPLICATE_KEY, image_request, input_image
from tests.support.images import pattern_png, rgba_png
from tests.support.providers import ReplicateFake, Serve, b64, decode_png


@pytest.fixture
async def fake(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> ReplicateFake:
    monkeypatch.setenv("TEST_REPLICATE_TOKEN", REPLICATE_KEY)
    return await serve(ReplicateFake(REPLICATE_KEY))


async def started(
    fake: ReplicateFake, context: BackendContext, **options: object
) -> ReplicateBackend:
    backend = ReplicateBackend(
        "x",
        {
            "base_url": fake.base_url,
            "api_key_env": "TEST_REPLICATE_TOKEN",
            "model": "black-forest-labs/flux-schnell",
            "poll_interval_seconds": 0.01,
            **options,
        },
    )
    await backend.start(context)
    return backend


def reads(fake: ReplicateFake) -> list[str]:
    return [r.path for r in fake.api_requests() if r.method == "GET"]


async def test_polls_until_succeeded(fake: ReplicateFake, context: BackendContext) -> None:
    fake.polls_before_done = 2
    backend = await started(fake, context)

    images = await backend.generate(image_request(n=2, seed=5))

    assert [decode_png(image.data) for image in images] == [(64, 64)] * 2
    [prediction_id] = fake.predictions
    assert reads(fake) == [f"/v1/predictions/{prediction_id}"] * 3
    assert fake.api_requests()[0].body["input"]["seed"] == 5
    assert fake.cancelled == []


async def test_failed_prediction_is_an_upstream_error(
    fake: ReplicateFake, context: BackendContext
) -> None:
    fake.polls_before_done, fake.outcome = 1, "failed"
    backend = await started(fake, context)

    # The fake's failure is an NSFW refusal: the request's own fault, a 400.
    with pytest.raises(UpstreamRefused, match="NSFW content detected") as caught:
        await backend.generate(image_request())
    assert (caught.value.status, caught.value.code) == (400, "content_policy_violation")

    assert fake.cancelled == []


async def test_own_deadline_cancels_the_prediction(
    fake: ReplicateFake, context: BackendContext
) -> None:
    fake.outcome = "never"
    backend = await started(fake, context, timeout_seconds=0.3)

    async with asyncio.timeout(5):  # only a safety net: the backend's deadline ends it
        with pytest.raises(UpstreamTimeout):
            await backend.generate(image_request())

    assert fake.cancelled == list(fake.predictions)
    assert len(reads(fake)) >= 2
    assert "Prefer" not in fake.api_requests()[0].headers  # no time for sync mode


async def test_hanging_poll_is_cancelled_when_the_caller_gives_up(
    fake: ReplicateFake, context: BackendContext
) -> None:
    fake.outcome, fake.hang_polls = "never", True
    backend = await started(fake, context)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await backend.generate(image_request())

    assert fake.cancelled == list(fake.predictions)


async def test_version_creates_through_predictions(
    fake: ReplicateFake, context: BackendContext
) -> None:
    backend = ReplicateBackend(
        "x",
        {"base_url": fake.base_url, "api_key_env": "TEST_REPLICATE_TOKEN", "version": "abc123"},
    )
    await backend.start(context)

    assert len(await backend.generate(image_request())) == 1
    create = fake.api_requests()[0]
    assert (create.path, create.body["version"]) == ("/v1/predictions", "abc123")


async def test_urls_on_another_host_are_not_used(
    fake: ReplicateFake, serve: Serve, context: BackendContext
) -> None:
    elsewhere = await serve(ReplicateFake(REPLICATE_KEY))
    fake.urls_origin = elsewhere.origin
    fake.polls_before_done = 1
    backend = await started(fake, context)

    assert len(await backend.generate(image_request())) == 1
    assert elsewhere.requests == []
    assert len(reads(fake)) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"model": "a/b", "version": "abc"},
            "backends.x.model: set exactly one of model and version",
        ),
        ({}, "backends.x.model: set exactly one of model and version"),
        ({"model": "flux-schnell"}, "backends.x.model: must be 'owner/name'"),
        ({"model": "a/b", "poll_interval_seconds": 0}, "backends.x.poll_interval_seconds: must be"),
    ],
)
def test_option_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ReplicateBackend("x", {"api_key_env": "REPLICATE_API_TOKEN", **options})

    assert str(caught.value).startswith(message)


async def test_edit_sends_the_image_and_mask_inputs(
    fake: ReplicateFake, context: BackendContext
) -> None:
    backend = await started(fake, context, image_input="input_image", mask_input="mask")
    source, mask = pattern_png(16, 16), rgba_png(16, 16, (0, 0, 8, 8))

    images = await backend.generate(
        image_request(operation=EDIT, images=(input_image(source),), mask=input_image(mask))
    )

    assert len(images) == 1
    model_input = fake.api_requests()[0].body["input"]
    assert model_input["input_image"] == "data:image/png;base64," + b64(source)
    assert model_input["mask"] == "data:image/png;base64," + b64(mask)
    assert model_input["prompt"] == "a lighthouse at dawn"


async def test_image_lists_and_what_a_model_cannot_take(
    fake: ReplicateFake, context: BackendContext
) -> None:
    plain = await started(fake, context)
    assert EDIT not in plain.operations
    single = await started(fake, context, image_input="image")
    two = (input_image(pattern_png(8, 8)), input_image(pattern_png(8, 8, 1)))
    with pytest.raises(UpstreamRefused) as refused:
        await single.generate(image_request(operation=EDIT, images=two))
    assert refused.value.param == "image[]"
    with pytest.raises(UpstreamRefused) as refused:
        await single.generate(
            image_request(operation=EDIT, images=two[:1], mask=input_image(rgba_png(8, 8, None)))
        )
    assert refused.value.param == "mask"
    listing = await started(fake, context, image_input="images", image_input_list=True)
    await listing.generate(image_request(prompt="", operation=VARIATION, images=two))
    model_input = fake.api_requests()[-1].body["input"]
    assert model_input["images"] == ["data:image/png;base64," + b64(i.data) for i in two]
    assert model_input["prompt"] == ""
