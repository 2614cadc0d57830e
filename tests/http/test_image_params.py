"""OpenAI's image parameters at the edge: checked against the model's backend, sent on
in its terms, and the format of stored and served images."""

from __future__ import annotations

import base64
import io
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.providers import decode_png as png_size
from tests.support.upstreams import FakeUpstream, upstream_config
from tests.support.waiting import eventually


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("background", "transparent", "it accepts: auto, opaque."),
        ("style", "vivid", "leave it out."),
        ("quality", "hd", "it accepts: auto."),
    ],
)
async def test_a_value_the_model_does_not_accept_is_400_and_free(
    gateway: Gateway, make_key: MakeKey, field: str, value: object, message: str
):
    key = await make_key(requests_per_minute=1, images_per_day=1)
    error = await expect_error(
        await gateway.generate(key.key, **{field: value}), 400, "invalid_request", field
    )
    assert "model 'local'" in error["message"]
    assert error["message"].endswith(message)
    # Nothing was counted: the one request and image allowed still go through.
    response = await gateway.generate(key.key, moderation="low", background="opaque")
    assert response.status == 200, await response.text()
    assert response.headers["x-ratelimit-remaining-images"] == "0"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quality", "ultra", "'quality' must be one of: auto, standard, hd, low, medium, high."),
        ("output_compression", 101, "'output_compression' must be a whole number from 0 to 100."),
        ("partial_images", 4, "'partial_images' must be a whole number from 0 to 3."),
        (
            "user",
            "u" * 257,
            "'user' must be a string of at most 256 characters, without control characters"
            " or line breaks.",
        ),
        (
            "user",
            "me\nFORGED log line",
            "'user' must be a string of at most 256 characters, without control characters"
            " or line breaks.",
        ),
        ("moderation", "high", "'moderation' must be one of: auto, low."),
    ],
)
async def test_values_outside_openais_are_400(
    gateway: Gateway, make_key: MakeKey, field: str, value: object, message: str
):
    key = await make_key()
    error = await expect_error(
        await gateway.generate(key.key, **{field: value}), 400, "invalid_request", field
    )
    assert error["message"] == message


async def test_size_auto_is_the_backends_default_size(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.generate(key.key, size="auto")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert png_size(base64.b64decode(body["data"][0]["b64_json"])) == (1024, 1024)


async def test_a_backend_that_cannot_stream_refuses_stream_before_charging(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    config = upstream_config(fake_upstream)
    config["backends"]["remote"]["capabilities"] = {"stream": False}
    gateway = await make_gateway(config)
    key = await make_key(requests_per_minute=1, images_per_day=1)
    error = await expect_error(
        await gateway.generate(key.key, model="remote", stream=True),
        400,
        "invalid_request",
        "stream",
    )
    assert error["message"].startswith("Model 'remote' cannot stream")
    assert fake_upstream.requests == []
    response = await gateway.generate(key.key, model="remote")
    assert response.status == 200, await response.text()


async def test_parameters_reach_the_upstream_and_jpeg_is_stored_as_jpeg(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    response = await gateway.generate(
        key.key,
        model="remote",
        quality="high",
        style="natural",
        output_format="jpeg",
        output_compression=70,
        user="customer-42",
        response_format="url",
    )
    assert response.status == 200, await response.text()
    sent = fake_upstream.requests[0]["body"]
    assert {k: sent[k] for k in ("quality", "style", "output_format", "output_compression")} == {
        "quality": "high",
        "style": "natural",
        "output_format": "jpeg",
        "output_compression": 70,
    }
    assert sent["user"] == "customer-42"
    link = (await response.json())["data"][0]["url"]
    assert link.split("?")[0].endswith(".jpg")
    parts = urlsplit(link)
    served = await gateway.client.get(f"{parts.path}?{parts.query}")
    assert served.status == 200
    assert served.headers["Content-Type"] == "image/jpeg"
    assert (await served.read())[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize(
    ("output_format", "extension", "content_type", "pillow"),
    [("jpeg", ".jpg", "image/jpeg", "JPEG"), ("webp", ".webp", "image/webp", "WEBP")],
)
async def test_local_formats_are_stored_and_served_as_such(
    gateway: Gateway,
    make_key: MakeKey,
    output_format: str,
    extension: str,
    content_type: str,
    pillow: str,
):
    key = await make_key()
    response = await gateway.generate(
        key.key, output_format=output_format, output_compression=80, response_format="url"
    )
    assert response.status == 200, await response.text()
    link = urlsplit((await response.json())["data"][0]["url"])
    assert link.path.endswith(extension)
    served = await gateway.client.get(f"{link.path}?{link.query}")
    assert served.status == 200
    assert served.headers["Content-Type"] == content_type
    image = Image.open(io.BytesIO(await served.read()))
    assert (image.format, image.size) == (pillow, (256, 256))


async def test_webp_in_b64_json_is_checked_and_delivered(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    response = await gateway.generate(key.key, model="remote", output_format="webp")
    assert response.status == 200, await response.text()
    data = base64.b64decode((await response.json())["data"][0]["b64_json"])
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"


async def test_jobs_keep_the_parameters_and_refuse_stream(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    refused = await gateway.client.post(
        "/v1/images/jobs",
        json={"prompt": "a kite", "size": "256x256", "model": "remote", "stream": True},
        headers=bearer(key.key),
    )
    await expect_error(refused, 400, "invalid_request", "stream")
    submitted = await gateway.client.post(
        "/v1/images/jobs",
        json={"prompt": "a kite", "size": "256x256", "model": "remote", "quality": "low"},
        headers=bearer(key.key),
    )
    assert submitted.status == 202, await submitted.text()
    job_id = (await submitted.json())["id"]

    async def done() -> object:
        job = await gateway.client.get(f"/v1/images/jobs/{job_id}", headers=bearer(key.key))
        status = (await job.json())["status"]
        return status == "succeeded" or status

    await eventually(done, timeout=10)
    assert fake_upstream.requests[0]["body"]["quality"] == "low"
    unsupported = await gateway.client.post(
        "/v1/images/jobs",
        json={"prompt": "a kite", "size": "256x256", "style": "vivid"},
        headers=bearer(key.key),
    )
    await expect_error(unsupported, 400, "invalid_request", "style")


async def test_models_say_what_they_accept(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.client.get("/v1/models", headers=bearer(key.key))
    [model] = (await response.json())["data"]
    assert model["default_size"] == "1024x1024"
    assert model["parameters"] == {
        "quality": ["auto"],
        "style": [],
        "background": ["auto", "opaque"],
        "output_format": ["png", "jpeg", "webp"],
        "moderation": ["auto", "low"],
        "input_fidelity": [],
        "output_compression": True,
        "stream": True,
    }


async def test_a_stable_diffusion_model_cannot_stream_and_says_so(
    make_gateway: MakeGateway, make_key: MakeKey
):
    gateway = await make_gateway(
        {
            "backends": {"sd": {"type": "a1111", "base_url": "http://127.0.0.1:9"}},
            "models": {"sdxl": "sd"},
        }
    )
    key = await make_key()
    error = await expect_error(
        await gateway.generate(key.key, model="sdxl", stream=True, size="512x512"),
        400,
        "invalid_request",
        "stream",
    )
    assert error["message"].startswith("Model 'sdxl' cannot stream")
    await expect_error(
        await gateway.generate(key.key, model="sdxl", style="vivid", size="512x512"),
        400,
        "invalid_request",
        "style",
    )
