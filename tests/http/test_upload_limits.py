"""Hostile uploads to the multipart endpoints: every one a clear 4xx, never a 5xx, and
what is over a limit refused as it arrives, not after it was read whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.images import encode, noise_png, pattern_png, png, rgba_png
from tests.support.processes import running_gateway
from tests.support.raw_http import check_error, exchange, http_request

MB = 1024 * 1024


def form(*parts: tuple[str, Any], prompt: str | None = "a kite") -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in parts:
        if isinstance(value, bytes):
            data.add_field(name, value, filename=f"{name}.png", content_type="image/png")
        else:
            data.add_field(name, value)
    if prompt is not None:
        data.add_field("prompt", prompt)
    return data


async def post_edit(
    gateway: Gateway, key: str, data: Any, headers: dict[str, str] | None = None
) -> Any:
    return await gateway.client.post(
        "/v1/images/edits", data=data, headers={**bearer(key), **(headers or {})}
    )


def raw_multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def text_part(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def file_part(name: str, value: bytes) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"; filename="a.png"\r\n'
    return (head + "Content-Type: image/png\r\n\r\n").encode() + value


@pytest.fixture
async def key(make_key: MakeKey) -> str:
    return (await make_key()).key


async def test_not_an_image(gateway: Gateway, key: str):
    garbage = b"\x89PNG\r\n\x1a\n" + b"garbage" * 100
    response = await post_edit(gateway, key, form(("image", garbage)))
    error = await expect_error(response, 400, "invalid_request", "image")
    assert "not a well-formed image" in error["message"]


async def test_webp_that_lies_about_its_size(gateway: Gateway, key: str):
    webp = bytearray(encode("WEBP", 64, 64))
    struct.pack_into("<I", webp, 4, len(webp) + 1000)  # the RIFF size says more follows
    response = await post_edit(
        gateway, key, form(("image[]", pattern_png(8, 8)), ("image[]", bytes(webp)))
    )
    error = await expect_error(response, 400, "invalid_request", "image[1]")
    assert "webp" in error["message"]


async def test_mask_of_another_size(gateway: Gateway, key: str):
    response = await post_edit(
        gateway, key, form(("image", pattern_png(64, 64)), ("mask", rgba_png(32, 64, None)))
    )
    error = await expect_error(response, 400, "invalid_request", "mask")
    assert "64x64" in error["message"]


async def test_mask_without_alpha(gateway: Gateway, key: str):
    response = await post_edit(gateway, key, form(("image", png(8, 8)), ("mask", png(8, 8))))
    error = await expect_error(response, 400, "invalid_request", "mask")
    assert "alpha" in error["message"]


async def test_gif_refused_and_variation_png_only(gateway: Gateway, key: str):
    gif = aiohttp.FormData()
    gif.add_field("image", encode("GIF", 8, 8), filename="a.gif", content_type="image/gif")
    gif.add_field("prompt", "x")
    await expect_error(await post_edit(gateway, key, gif), 400, "invalid_request", "image")
    jpeg = aiohttp.FormData()
    jpeg.add_field("image", encode("JPEG", 8, 8), filename="a.jpg", content_type="image/jpeg")
    response = await gateway.client.post("/v1/images/variations", data=jpeg, headers=bearer(key))
    await expect_error(response, 400, "invalid_request", "image")


async def test_fields(gateway: Gateway, key: str):
    image = ("image", pattern_png(8, 8))
    cases: list[tuple[aiohttp.FormData, str | None]] = [
        (form(image, prompt=None), "prompt"),
        (form(image, prompt="   "), "prompt"),
        (form(image, prompt="x" * 20_000), "prompt"),
        (form(prompt="no image"), "image"),
        (form(image, ("n", "many")), "n"),
        (form(image, ("n", "5")), "n"),
        (form(image, ("size", "big")), "size"),
        (form(image, ("size", "300x300")), "size"),
        (form(image, ("quality", "ultra")), "quality"),
        (form(image, ("output_compression", "101")), "output_compression"),
        (form(image, ("partial_images", "4")), "partial_images"),
        (form(image, ("response_format", "gif")), "response_format"),
        (form(image, ("user", "u" * 2000)), "user"),
        (form(image, ("mystery", b"x")), "mystery"),  # a file under an unknown name
        (form(image, ("mask", rgba_png(8, 8, None)), ("mask", rgba_png(8, 8, None))), "mask"),
    ]
    for data, param in cases:
        response = await post_edit(gateway, key, data)
        assert (await response.json())["error"]["param"] == param, await response.text()
        await expect_error(response, 400, "invalid_request", param)
    response = await post_edit(gateway, key, form(image, ("model", "nope")))
    await expect_error(response, 404, "model_not_found", "model")


async def test_seventeen_images(gateway: Gateway, key: str):
    data = form(*[("image[]", pattern_png(4, 4))] * 17)
    await expect_error(await post_edit(gateway, key, data), 400, "invalid_request", "image[]")


async def test_not_multipart(gateway: Gateway, key: str):
    response = await gateway.client.post(
        "/v1/images/edits", json={"prompt": "x", "image": "aGk="}, headers=bearer(key)
    )
    await expect_error(response, 400, "invalid_request")
    for content_type in ("multipart/form-data; boundary=zz", "multipart/form-data"):
        headers = {"Content-Type": content_type}
        response = await post_edit(gateway, key, b"no boundary in here", headers=headers)
        await expect_error(response, 400, "invalid_request")
    body, headers = raw_multipart([text_part("prompt", b"\xff\xfe"), file_part("image", png(4, 4))])
    response = await post_edit(gateway, key, body, headers=headers)
    await expect_error(response, 400, "invalid_request", "prompt")


async def test_part_without_a_name(gateway: Gateway, key: str):
    body, headers = raw_multipart([b"Content-Disposition: form-data\r\n\r\nvalue"])
    response = await post_edit(gateway, key, body, headers=headers)
    error = await expect_error(response, 400, "invalid_request")
    assert "no name" in error["message"]


async def test_nested_multipart(gateway: Gateway, key: str):
    inner, _ = raw_multipart([text_part("prompt", b"x")], boundary="inner")
    nested = (
        b'Content-Disposition: form-data; name="image"\r\n'
        b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n" + inner
    )
    body, headers = raw_multipart([nested, text_part("prompt", b"x")])
    response = await post_edit(gateway, key, body, headers=headers)
    error = await expect_error(response, 400, "invalid_request", "image")
    assert "multipart" in error["message"]


async def test_ten_thousand_tiny_parts(gateway: Gateway, key: str):
    parts = [text_part(f"f{i}", b"x") for i in range(10_000)]
    body, headers = raw_multipart(parts)
    response = await post_edit(gateway, key, body, headers=headers)
    error = await expect_error(response, 400, "invalid_request", "f64")
    assert "parts" in error["message"]


async def test_file_over_max_upload_bytes(make_gateway: MakeGateway, key: str):
    gateway = await make_gateway({"server": {"max_upload_bytes": 4096}})
    big = pattern_png(8, 8) + b"\x00" * 5000
    response = await post_edit(gateway, key, form(("image", big)))
    error = await expect_error(response, 413, "payload_too_large", "image")
    assert "4096" in error["message"]


async def test_body_over_the_limit_refused_before_it_is_read(served, key: str):
    # A declared length over 17 files plus max_body_bytes: refused from the head alone.
    request = http_request(
        "POST",
        "/v1/images/edits",
        headers=[
            ("Authorization", f"Bearer {key}"),
            ("Content-Type", "multipart/form-data; boundary=zz"),
        ],
        content_length=1024 * MB,
    )
    check_error(await exchange(served.port, request), 413, "payload_too_large")


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(120)
async def test_hundred_megabyte_upload_does_not_grow_the_process(
    tmp_path: Path, raw_config: dict[str, Any], key: str
):
    async with running_gateway(tmp_path, raw_config) as (url, process):
        peak_before = vm_hwm_kib(process.pid)
        boundary = "big0ne"
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        total = 100 * MB

        async def body() -> AsyncIterator[bytes]:
            yield head + b"\x89PNG\r\n\x1a\n"
            chunk = b"\x00" * MB
            for _ in range(total // MB):
                yield chunk
            yield f"\r\n--{boundary}--\r\n".encode()

        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/v1/images/edits",
                data=body(),
                headers={
                    "Authorization": f"Bearer {key}",
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                },
            ) as response,
        ):
            error = (await response.json())["error"]
        assert response.status == 413
        assert error["param"] == "image"
        grown_mib = (vm_hwm_kib(process.pid) - peak_before) / 1024
        assert grown_mib < 40, f"the gateway's peak memory grew by {grown_mib:.0f} MiB"
        # And it still serves.
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as health:
            assert health.status == 200


def open_temporary_files(directory: Path) -> list[str]:
    """This process's open files under ``directory`` (unlinked ones too)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(directory)):
                found.append(target)
    return found


async def test_spilled_uploads_are_freed(gateway: Gateway, key: str, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    big = noise_png(700, 700)  # over the in-memory threshold: spilled to a file
    assert len(big) > MB
    response = await post_edit(gateway, key, form(("image", big), ("size", "256x256")))
    assert response.status == 200, await response.text()
    assert open_temporary_files(tmp_path) == []
    response = await post_edit(gateway, key, form(("image", big + b"junk")))
    await expect_error(response, 400, "invalid_request", "image")
    assert open_temporary_files(tmp_path) == []


async def test_an_upload_that_stalls_gets_408(make_gateway: MakeGateway, key: str):
    gateway = await make_gateway({"server": {"body_read_timeout_seconds": 0.3}})
    stalled = asyncio.Event()  # never set: the client stops sending after the first part

    async def body() -> AsyncIterator[bytes]:
        yield b'--zz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--zz\r\n'
        await stalled.wait()

    response = await post_edit(
        gateway, key, body(), headers={"Content-Type": "multipart/form-data; boundary=zz"}
    )
    await expect_error(response, 408, "request_timeout")
    stalled.set()
