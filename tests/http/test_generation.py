"""The generation endpoint: the happy path, the response shape and headers."""

from __future__ import annotations

import base64
import struct

import pytest

from tests.support.gateway import Gateway, MakeKey
from tests.support.http import expect_error


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_generates_real_pngs_of_the_requested_size(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.generate(key.key, n=2, size="512x512")
    assert response.status == 200
    body = await response.json()
    assert body["model"] == "local"
    assert body["usage"] == {"images": 2}
    assert isinstance(body["created"], int)
    assert len(body["data"]) == 2
    images = [base64.b64decode(item["b64_json"]) for item in body["data"]]
    assert all(png_size(image) == (512, 512) for image in images)
    assert images[0] != images[1]
    assert body["data"][0]["revised_prompt"] is None


async def test_v1_generate_is_the_same_endpoint(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.client.post(
        "/v1/generate",
        json={"prompt": "a fox", "size": "256x256", "seed": 7},
        headers={"X-API-Key": key.key},
    )
    assert response.status == 200
    body = await response.json()
    assert png_size(base64.b64decode(body["data"][0]["b64_json"])) == (256, 256)


async def test_same_prompt_and_seed_give_the_same_image(gateway: Gateway, make_key: MakeKey):
    key = await make_key("pro")
    first = await (await gateway.generate(key.key, prompt="x", seed=42)).json()
    second = await (await gateway.generate(key.key, prompt="x", seed=42)).json()
    other = await (await gateway.generate(key.key, prompt="x", seed=43)).json()
    assert first["data"][0]["b64_json"] == second["data"][0]["b64_json"]
    assert first["data"][0]["b64_json"] != other["data"][0]["b64_json"]


async def test_defaults_are_one_image_of_1024(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.client.post(
        "/v1/images/generations",
        json={"prompt": "a boat", "unknown_field": {"ignored": True}},
        headers={"Authorization": f"Bearer {key.key}"},
    )
    assert response.status == 200
    body = await response.json()
    assert len(body["data"]) == 1
    assert png_size(base64.b64decode(body["data"][0]["b64_json"])) == (1024, 1024)


async def test_rate_limit_headers_on_success(gateway: Gateway, make_key: MakeKey):
    key = await make_key()  # free: 10 requests/minute, 50 images/day
    response = await gateway.generate(key.key, n=3)
    assert response.status == 200
    h = response.headers
    assert h["RateLimit-Policy"] == '"requests";q=10;w=60, "images";q=50;w=86400'
    requests_part, images_part = h["RateLimit"].split(", ")
    assert requests_part.startswith('"requests";r=9;t=')
    assert 0 < int(requests_part.rsplit("=", 1)[1]) <= 60
    assert images_part.startswith('"images";r=47;t=')
    assert 0 < int(images_part.rsplit("=", 1)[1]) <= 86400
    assert h["x-ratelimit-limit-requests"] == "10"
    assert h["x-ratelimit-remaining-requests"] == "9"
    assert h["x-ratelimit-reset-requests"] in ("59s", "1m0s")
    assert h["x-ratelimit-limit-images"] == "50"
    assert h["x-ratelimit-remaining-images"] == "47"
    assert h["x-ratelimit-reset-images"].endswith("s")
    assert h["X-Content-Type-Options"] == "nosniff"
    assert "aiohttp" not in h.get("Server", "")


async def test_request_id_is_echoed_when_sane_and_made_otherwise(
    gateway: Gateway, make_key: MakeKey
):
    key = await make_key()
    headers = {"Authorization": f"Bearer {key.key}"}
    ok = await gateway.client.post(
        "/v1/images/generations",
        json={"prompt": "p", "size": "256x256"},
        headers={**headers, "X-Request-ID": "client-abc.123"},
    )
    assert ok.headers["X-Request-ID"] == "client-abc.123"
    odd = await gateway.client.post(
        "/v1/images/generations",
        json={"prompt": "p", "size": "256x256"},
        headers={**headers, "X-Request-ID": "x" * 300},
    )
    assert odd.headers["X-Request-ID"] != "x" * 300
    assert len(odd.headers["X-Request-ID"]) == 32


async def test_models_list(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    response = await gateway.client.get(
        "/v1/models", headers={"Authorization": f"Bearer {key.key}"}
    )
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["local"]
    assert body["data"][0]["object"] == "model"


async def test_health_and_readiness(gateway: Gateway):
    health = await gateway.client.get("/healthz")
    assert health.status == 200
    assert (await health.json())["status"] == "ok"
    ready = await gateway.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"postgres": "ok", "redis": "ok"}


@pytest.mark.parametrize("stream", [None, False])
async def test_stream_false_or_null_is_one_response(
    gateway: Gateway, make_key: MakeKey, stream: bool | None
):
    key = await make_key()
    response = await gateway.generate(key.key, stream=stream)
    assert response.status == 200, await response.text()
    assert (await response.json())["usage"] == {"images": 1}


async def test_stream_must_be_a_boolean(gateway: Gateway, make_key: MakeKey):
    key = await make_key()
    error = await expect_error(
        await gateway.generate(key.key, stream="yes"), 400, "invalid_request", "stream"
    )
    assert error["message"] == "'stream' must be true or false."
