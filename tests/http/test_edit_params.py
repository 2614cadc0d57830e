"""Edits and variations take OpenAI's parameters as generations do: the same values and
messages, the same check against the model's backend (400 naming the param and listing
what the model accepts, before anything is charged), their images in the asked format."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from gateway.media.inspect import inspect_image
from tests.support.gateway import Gateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.images import pattern_png, rgba_png

SIZE = 64
USER_MESSAGE = (
    "'user' must be a string of at most 256 characters, without control characters or line breaks."
)


async def upload(
    gateway: Gateway, key: str, path: str, headers: dict[str, str] | None = None, **fields: str
) -> Any:
    form = aiohttp.FormData()
    form.add_field("image", pattern_png(SIZE, SIZE), filename="a.png", content_type="image/png")
    if path.endswith("edits"):
        mask = rgba_png(SIZE, SIZE, (0, 0, SIZE // 2, SIZE))
        form.add_field("mask", mask, filename="m.png", content_type="image/png")
        form.add_field("prompt", "a red boat")
    form.add_field("size", "256x256")
    for name, value in fields.items():
        form.add_field(name, value)
    return await gateway.client.post(path, data=form, headers={**bearer(key), **(headers or {})})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quality", "hd", "it accepts: auto."),
        ("background", "transparent", "it accepts: auto, opaque."),
        ("input_fidelity", "high", "leave it out."),
    ],
)
async def test_an_edit_value_the_model_does_not_accept_is_400_and_free(
    gateway: Gateway, make_key: MakeKey, field: str, value: str, message: str
):
    key = await make_key(requests_per_minute=1, images_per_day=1)
    response = await upload(gateway, key.key, "/v1/images/edits", **{field: value})
    error = await expect_error(response, 400, "invalid_request", field)
    assert "model 'local'" in error["message"]
    assert error["message"].endswith(message)
    # Nothing was counted: the one request and image allowed still go through.
    response = await upload(
        gateway, key.key, "/v1/images/edits", output_format="webp", background="opaque"
    )
    assert response.status == 200, await response.text()
    assert response.headers["x-ratelimit-remaining-images"] == "0"
    image = base64.b64decode((await response.json())["data"][0]["b64_json"])
    info = inspect_image(image)
    assert (info.media_type, info.width, info.height) == ("image/webp", 256, 256)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quality", "ultra", "'quality' must be one of: auto, standard, hd, low, medium, high."),
        ("input_fidelity", "medium", "'input_fidelity' must be one of: high, low."),
        ("output_compression", "101", "'output_compression' must be a whole number from 0 to 100."),
        ("partial_images", "4", "'partial_images' must be a whole number from 0 to 3."),
        ("user", "me\nFORGED log line", USER_MESSAGE),
        ("user", "u" * 257, USER_MESSAGE),
    ],
)
async def test_edit_values_outside_openais_are_400_with_the_generations_messages(
    gateway: Gateway, make_key: MakeKey, field: str, value: str, message: str
):
    key = await make_key()
    response = await upload(gateway, key.key, "/v1/images/edits", **{field: value})
    error = await expect_error(response, 400, "invalid_request", field)
    assert error["message"] == message
    generation = await gateway.generate(key.key, **{field: value})
    if field != "input_fidelity":  # an edit's own
        assert (await generation.json())["error"]["message"] == message


async def test_a_variation_takes_user_as_generations_do(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    refused = await upload(gateway, key.key, "/v1/images/variations", user="me\rFORGED")
    error = await expect_error(refused, 400, "invalid_request", "user")
    assert error["message"] == USER_MESSAGE
    response = await upload(gateway, key.key, "/v1/images/variations", user="end-user-7")
    assert response.status == 200, await response.text()


async def test_a_streamed_edit_is_not_a_job_and_not_links(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    as_job = await upload(
        gateway, key.key, "/v1/images/edits", {"Prefer": "respond-async"}, stream="true"
    )
    error = await expect_error(as_job, 400, "invalid_request", "stream")
    assert "POST /v1/images/edits without 'Prefer: respond-async'" in error["message"]
    as_links = await upload(
        gateway, key.key, "/v1/images/edits", stream="true", response_format="url"
    )
    await expect_error(as_links, 400, "invalid_request", "response_format")
