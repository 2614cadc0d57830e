"""The a1111 backend's own behaviour: grids are never counted, basic auth is optional."""

from __future__ import annotations

import base64

import pytest

from gateway.backends.a1111 import A1111Backend
from gateway.backends.base import EDIT, VARIATION, BackendContext
from gateway.config import ConfigError
from tests.support.backend_cases import A1111_PASSWORD, A1111_USER, image_request, input_image
from tests.support.images import pattern_png, rgba_png
from tests.support.providers import A1111Fake, Serve, decode_png


@pytest.fixture
async def fake(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> A1111Fake:
    monkeypatch.setenv("TEST_A1111_USER", A1111_USER)
    monkeypatch.setenv("TEST_A1111_PASSWORD", A1111_PASSWORD)
    return await serve(A1111Fake(A1111_USER, A1111_PASSWORD))


async def started(fake: A1111Fake, context: BackendContext) -> A1111Backend:
    backend = A1111Backend(
        "x",
        {
            "base_url": fake.base_url,
            "username_env": "TEST_A1111_USER",
            "password_env": "TEST_A1111_PASSWORD",
        },
    )
    await backend.start(context)
    return backend


@pytest.mark.parametrize("info", [True, False], ids=["info-says", "counted"])
async def test_grid_image_is_dropped(fake: A1111Fake, context: BackendContext, info: bool) -> None:
    fake.grid, fake.info = True, info
    backend = await started(fake, context)

    images = await backend.generate(image_request(n=3))

    assert [decode_png(image.data) for image in images] == [(64, 64)] * 3  # the grid is 128 wide


async def test_seed_negative_prompt_and_settings_are_sent(
    fake: A1111Fake, context: BackendContext
) -> None:
    backend = A1111Backend(
        "x",
        {
            "base_url": fake.base_url,
            "username_env": "TEST_A1111_USER",
            "password_env": "TEST_A1111_PASSWORD",
            "steps": 30,
            "cfg_scale": 5.5,
            "sampler": "DPM++ 2M Karras",
        },
    )
    await backend.start(context)

    await backend.generate(image_request(seed=7, negative_prompt="blurry"))

    body = fake.api_requests()[0].body
    assert (body["seed"], body["negative_prompt"]) == (7, "blurry")
    assert (body["steps"], body["cfg_scale"], body["sampler_name"]) == (30, 5.5, "DPM++ 2M Karras")


async def test_without_auth_options_no_credentials_are_sent(
    serve: Serve, context: BackendContext
) -> None:
    fake = await serve(A1111Fake(None, ""))
    backend = A1111Backend("x", {"base_url": fake.base_url})
    await backend.start(context)

    assert len(await backend.generate(image_request())) == 1
    assert fake.api_requests()[0].credentials() == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "backends.x.base_url: required, an http(s) URL"),
        ({"username_env": "SD_USER"}, "backends.x.password_env: required with username_env"),
        ({"password_env": "SD_PASSWORD"}, "backends.x.username_env: required with password_env"),
        ({"steps": 0}, "backends.x.steps: must be a whole number >= 1"),
        ({"steps": True}, "backends.x.steps: must be a whole number >= 1"),
        ({"cfg_scale": "high"}, "backends.x.cfg_scale: must be a number > 0"),
        ({"sampler": ""}, "backends.x.sampler: must be a non-empty string"),
        ({"sizes": ["512x500"]}, "backends.x.sizes: '512x500' is not a multiple of 8"),
        ({"denoising_strength": 1.5}, "backends.x.denoising_strength: must be from 0 to 1"),
    ],
)
def test_option_errors(options: dict[str, object], message: str) -> None:
    if "base_url" not in options and options:
        options = {"base_url": "http://sd.internal:7860", **options}
    with pytest.raises(ConfigError) as caught:
        A1111Backend("x", options)

    assert str(caught.value).startswith(message)


async def test_edit_goes_to_img2img_with_the_mask(fake: A1111Fake, context: BackendContext) -> None:
    backend = A1111Backend(
        "x",
        {
            "base_url": fake.base_url,
            "username_env": "TEST_A1111_USER",
            "password_env": "TEST_A1111_PASSWORD",
            "denoising_strength": 0.4,
        },
    )
    await backend.start(context)
    source, mask = pattern_png(32, 32), rgba_png(32, 32, (0, 0, 16, 16))

    images = await backend.generate(
        image_request(
            n=2, operation=EDIT, images=(input_image(source),), mask=input_image(mask, "m.png")
        )
    )

    assert [decode_png(image.data) for image in images] == [(64, 64)] * 2
    [call] = fake.api_requests()
    assert call.path == "/sdapi/v1/img2img"
    body = call.body
    assert body["init_images"] == [base64.b64encode(source).decode()]
    assert body["mask"] == base64.b64encode(mask).decode()
    assert (body["inpainting_mask_invert"], body["denoising_strength"]) == (1, 0.4)
    assert (body["prompt"], body["batch_size"]) == ("a lighthouse at dawn", 2)


async def test_variation_is_img2img_without_a_prompt(
    fake: A1111Fake, context: BackendContext
) -> None:
    backend = await started(fake, context)
    source = pattern_png(32, 32)

    [image] = await backend.generate(
        image_request(prompt="", operation=VARIATION, images=(input_image(source),))
    )

    assert decode_png(image.data) == (64, 64)
    body = fake.api_requests()[0].body
    assert (body["prompt"], body["denoising_strength"]) == ("", 0.75)
    assert "mask" not in body
