"""What each backend type accepts of OpenAI's parameters, how it says so in its
upstream's terms, what a config may narrow, and the check of a request against it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.backends.a1111 import A1111Backend
from gateway.backends.base import BackendContext
from gateway.backends.capabilities import ALL_CAPABILITIES, Capabilities, check_request
from gateway.backends.gemini import GeminiBackend
from gateway.backends.http import HttpBackend
from gateway.backends.local import LocalBackend, render_png
from gateway.backends.openai import OpenAIBackend
from gateway.backends.replicate import ReplicateBackend
from gateway.config import ConfigError
from gateway.errors import InvalidRequest, UpstreamRefused
from gateway.media.inspect import inspect_image
from tests.support.backend_cases import (
    A1111_PASSWORD,
    A1111_USER,
    OPENAI_KEY,
    REPLICATE_KEY,
    image_request,
)
from tests.support.providers import A1111Fake, OpenAIFake, ReplicateFake, Serve
from tests.support.streams import convert


def openai_backend(base_url: str = "http://upstream.test/v1", **options: object) -> OpenAIBackend:
    return OpenAIBackend("x", {"base_url": base_url, "api_key_env": "TEST_OPENAI_KEY", **options})


# -- declared capabilities -----------------------------------------------------------


def test_openai_capabilities_follow_the_upstream_model() -> None:
    backend = openai_backend()
    gpt = backend.capabilities_for("gpt-image-1")
    assert gpt.quality == ("auto", "low", "medium", "high")
    assert gpt.output_format == ("png", "jpeg", "webp")
    assert gpt.stream
    assert gpt.output_compression
    assert gpt.style == ()
    assert gpt.input_fidelity == ("high", "low")  # edits
    dall_e_3 = backend.capabilities_for("dall-e-3")
    assert dall_e_3.quality == ("auto", "standard", "hd")
    assert dall_e_3.style == ("vivid", "natural")
    assert not dall_e_3.stream
    assert dall_e_3.input_fidelity == ()
    # The configured upstream model decides, not the client's name for it.
    assert openai_backend(model="dall-e-2").capabilities_for("gpt-image-1").quality == (
        "auto",
        "standard",
    )
    # An unknown (compatible) upstream is sent whatever the client asks for.
    assert backend.capabilities_for("my-own-model") == ALL_CAPABILITIES


def test_each_type_declares_what_it_can_carry() -> None:
    assert LocalBackend("l", {}).capabilities_for("m") == Capabilities(
        background=("auto", "opaque"),
        output_format=("png", "jpeg", "webp"),
        output_compression=True,
        moderation=("auto", "low"),
        stream=True,
    )
    a1111 = A1111Backend("a", {"base_url": "http://sd.test"})
    assert a1111.capabilities_for("m").quality == (
        "auto",
        "standard",
        "hd",
        "low",
        "medium",
        "high",
    )
    assert not a1111.capabilities_for("m").stream
    gemini = GeminiBackend("g", {"api_key_env": "GEMINI_KEY"}).capabilities_for("m")
    assert gemini == Capabilities()
    replicate = ReplicateBackend("r", {"api_key_env": "R_KEY", "model": "a/b"})
    assert replicate.capabilities_for("m").output_format == ("png", "jpeg", "webp")
    http = HttpBackend("h", {"base_url": "http://gw.test/v1"})
    assert http.capabilities_for("dall-e-3") == ALL_CAPABILITIES


def test_config_narrows_capabilities() -> None:
    backend = openai_backend(
        capabilities={"quality": ["low", "high"], "stream": False, "output_compression": False}
    )
    caps = backend.capabilities_for("gpt-image-1")
    assert caps.quality == ("low", "high")
    assert not caps.stream
    assert not caps.output_compression
    assert caps.output_format == ("png", "jpeg", "webp")  # not named: the type's own


@pytest.mark.parametrize(
    ("backend_type", "options", "capabilities", "message"),
    [
        (
            LocalBackend,
            {},
            {"background": ["transparent"]},
            "backends.x.capabilities.background: this backend type cannot send 'transparent'"
            " upstream (it can: auto, opaque)",
        ),
        (
            LocalBackend,
            {},
            {"quality": ["ultra"]},
            "backends.x.capabilities.quality: 'ultra' is not one of auto, standard, hd, low,"
            " medium, high",
        ),
        (
            LocalBackend,
            {},
            {"colour": ["red"]},
            "backends.x.capabilities.colour: unknown parameter (known: quality, style,"
            " background, output_format, moderation, input_fidelity, output_compression,"
            " stream)",
        ),
        (
            A1111Backend,
            {"base_url": "http://sd.test"},
            {"stream": True},
            "backends.x.capabilities.stream: this backend type cannot stream",
        ),
        (
            LocalBackend,
            {},
            {"stream": "yes"},
            "backends.x.capabilities.stream: must be true or false",
        ),
        (LocalBackend, {}, {"quality": "low"}, "backends.x.capabilities.quality: must be a list"),
        (LocalBackend, {}, ["quality"], "backends.x.capabilities: must be a mapping"),
    ],
)
def test_config_capabilities_errors_name_the_key(
    backend_type: type[LocalBackend], options: dict[str, object], capabilities: object, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        backend_type("x", {**options, "capabilities": capabilities})
    assert str(raised.value).startswith(message)


def test_default_size_is_1024_when_offered_and_configurable() -> None:
    assert LocalBackend("l", {}).default_size == "1024x1024"
    assert LocalBackend("l", {"sizes": ["512x512", "256x256"]}).default_size == "256x256"
    assert LocalBackend("l", {"sizes": ["512x512"], "default_size": "512x512"}).default_size == (
        "512x512"
    )
    with pytest.raises(ConfigError, match=r"backends\.l\.default_size: must be one of its sizes"):
        LocalBackend("l", {"sizes": ["512x512"], "default_size": "64x64"})


def test_check_request_names_the_param_and_what_the_model_accepts() -> None:
    caps = LocalBackend("l", {}).capabilities_for("local")
    with pytest.raises(InvalidRequest) as raised:
        check_request(image_request(background="transparent"), caps, "local")
    assert raised.value.param == "background"
    assert raised.value.message == (
        "'background' 'transparent' is not available for model 'local'; it accepts: auto, opaque."
    )
    with pytest.raises(InvalidRequest) as raised:
        check_request(image_request(style="vivid"), caps, "local")
    assert (raised.value.param, raised.value.message) == (
        "style",
        "'style' is not available for model 'local'; leave it out.",
    )
    with pytest.raises(InvalidRequest) as raised:
        check_request(image_request(stream=True), Capabilities(), "sd")
    assert raised.value.param == "stream"
    with pytest.raises(InvalidRequest) as raised:
        check_request(image_request(output_compression=50), Capabilities(), "sd")
    assert raised.value.param == "output_compression"
    check_request(image_request(quality="auto", moderation="low", stream=True), caps, "local")


# -- in the upstream's own terms -----------------------------------------------------


@pytest.fixture
async def openai_fake(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> OpenAIFake:
    monkeypatch.setenv("TEST_OPENAI_KEY", OPENAI_KEY)
    return await serve(OpenAIFake(OPENAI_KEY))


async def test_openai_gets_the_parameters_under_their_own_names(
    openai_fake: OpenAIFake, context: BackendContext
) -> None:
    backend = openai_backend(openai_fake.base_url)
    await backend.start(context)

    [image] = await backend.generate(
        image_request(
            model="gpt-image-1",
            quality="high",
            background="opaque",
            output_format="jpeg",
            output_compression=40,
            moderation="low",
            user="end-user-7",
        )
    )

    [call] = openai_fake.api_requests()
    assert {k: call.body[k] for k in call.body if k not in ("prompt", "n", "size", "model")} == {
        "quality": "high",
        "background": "opaque",
        "output_format": "jpeg",
        "output_compression": 40,
        "moderation": "low",
        "user": "end-user-7",
    }
    assert image.data[:3] == b"\xff\xd8\xff"


async def test_dall_e_gets_only_what_it_takes(
    openai_fake: OpenAIFake, context: BackendContext
) -> None:
    backend = openai_backend(openai_fake.base_url, model="dall-e-3")
    await backend.start(context)

    # background "auto" and output_format "png" are dall-e's only behaviour: not sent.
    await backend.generate(
        image_request(quality="hd", style="natural", background="auto", output_format="png")
    )

    [call] = openai_fake.api_requests()
    assert call.body["quality"] == "hd"
    assert call.body["style"] == "natural"
    assert "background" not in call.body
    assert "output_format" not in call.body


async def test_http_backend_sends_everything_whatever_the_model_is_called(
    openai_fake: OpenAIFake, context: BackendContext
) -> None:
    backend = HttpBackend("h", {"base_url": openai_fake.base_url, "model": "gpt-image-1"})
    body = backend.request_body(image_request(model="dall-e-3", background="opaque"))
    assert body["background"] == "opaque"
    dall_e = HttpBackend("h", {"base_url": openai_fake.base_url, "model": "dall-e-3"})
    assert dall_e.request_body(image_request(output_format="png"))["output_format"] == "png"


@pytest.mark.parametrize(
    ("quality", "steps"),
    [(None, 20), ("auto", 20), ("low", 10), ("medium", 20), ("high", 30), ("hd", 40)],
)
async def test_a1111_quality_is_sampling_steps(
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
    context: BackendContext,
    quality: str | None,
    steps: int,
) -> None:
    monkeypatch.setenv("TEST_A1111_USER", A1111_USER)
    monkeypatch.setenv("TEST_A1111_PASSWORD", A1111_PASSWORD)
    fake = await serve(A1111Fake(A1111_USER, A1111_PASSWORD))
    backend = A1111Backend(
        "x",
        {
            "base_url": fake.base_url,
            "username_env": "TEST_A1111_USER",
            "password_env": "TEST_A1111_PASSWORD",
        },
    )
    await backend.start(context)

    await backend.generate(image_request(quality=quality))

    assert fake.api_requests()[0].body["steps"] == steps


async def test_replicate_gets_its_own_input_names(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, context: BackendContext
) -> None:
    monkeypatch.setenv("TEST_REPLICATE_TOKEN", REPLICATE_KEY)
    fake = await serve(ReplicateFake(REPLICATE_KEY))
    options = {
        "base_url": fake.base_url,
        "api_key_env": "TEST_REPLICATE_TOKEN",
        "model": "black-forest-labs/flux-schnell",
        "poll_interval_seconds": 0.01,
    }
    flux = ReplicateBackend("x", options)
    other = ReplicateBackend("y", {**options, "input_names": {"output_compression": "quality"}})
    for backend in (flux, other):
        await backend.start(context)
        await backend.generate(image_request(output_format="jpeg", output_compression=80))

    first, second = (r.body["input"] for r in fake.api_requests() if r.method == "POST")
    assert (first["output_format"], first["output_quality"]) == ("jpg", 80)
    assert (second["output_format"], second["quality"]) == ("jpg", 80)
    with pytest.raises(ConfigError, match=r"backends\.z\.input_names: must map"):
        ReplicateBackend("z", {**options, "input_names": {"seed": "s"}})


# -- streams --------------------------------------------------------------------------


async def test_local_streams_coarse_versions_then_the_image_it_would_make() -> None:
    backend = LocalBackend("l", {})
    request = image_request(n=2, seed=9, stream=True, partial_images=2)

    events = [event async for event in backend.stream(request)]

    assert [(e.index, e.partial_index) for e in events] == [
        (0, 0),
        (0, 1),
        (0, None),
        (1, 0),
        (1, 1),
        (1, None),
    ]
    made = await backend.generate(request)
    assert [e.image.data for e in events if e.completed] == [i.data for i in made]
    # Coarser first: fewer distinct colours, all of them the final image's.
    colours = [_colours(e.image.data) for e in events[:3]]
    assert len(colours[0]) < len(colours[1]) < len(colours[2])
    assert colours[0] <= colours[2]
    assert colours[1] <= colours[2]


def _colours(png: bytes) -> set[tuple[int, int, int]]:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return {colour for _, colour in image.getcolors(maxcolors=1 << 16) or []}


async def test_openai_stream_passes_the_upstreams_events_on(
    openai_fake: OpenAIFake, context: BackendContext
) -> None:
    backend = openai_backend(openai_fake.base_url)
    await backend.start(context)
    request = image_request(model="gpt-image-1", stream=True, partial_images=2)

    events = [event async for event in backend.stream(request)]

    [call] = openai_fake.api_requests()
    assert (call.body["stream"], call.body["partial_images"]) == (True, 2)
    assert [(e.index, e.partial_index) for e in events] == [(0, 0), (0, 1), (0, None)]
    assert events[-1].usage is not None
    assert events[-1].usage["total_tokens"] == 100
    [made] = await backend.generate(image_request(model="gpt-image-1"))
    assert events[-1].image.data == made.data
    await backend.close()


async def test_an_upstream_that_answers_a_stream_with_json_gives_completed_images(
    openai_fake: OpenAIFake, context: BackendContext
) -> None:
    openai_fake.streams = False
    backend = openai_backend(openai_fake.base_url)
    await backend.start(context)

    request = image_request(n=2, stream=True, partial_images=2)
    events = [event async for event in backend.stream(request)]

    assert [(e.index, e.partial_index) for e in events] == [(0, None), (1, None)]
    assert events[0].image.revised_prompt == "a lighthouse at dawn, in watercolour"
    await backend.close()


async def test_openai_stream_refusal_is_the_requests_fault(
    openai_fake: OpenAIFake, context: BackendContext
) -> None:
    openai_fake.mode = "bad_request"
    backend = openai_backend(openai_fake.base_url)
    await backend.start(context)

    with pytest.raises(UpstreamRefused) as raised:
        async for _ in backend.stream(image_request(model="gpt-image-1", stream=True)):
            pass
    assert OPENAI_KEY not in raised.value.message
    await backend.close()


def test_the_fakes_convert_to_webp() -> None:
    data = convert(render_png("x", 1, 16, 16), "webp")
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"


async def test_local_makes_jpeg_of_the_same_picture() -> None:
    backend = LocalBackend("l", {})
    [png] = await backend.generate(image_request(seed=3, width=200, height=120))
    [jpeg] = await backend.generate(
        image_request(seed=3, width=200, height=120, output_format="jpeg")
    )
    [rough] = await backend.generate(
        image_request(seed=3, width=200, height=120, output_format="jpeg", output_compression=5)
    )

    assert (png.media_type, jpeg.media_type) == ("image/png", "image/jpeg")
    assert inspect_image(jpeg.data).media_type == "image/jpeg"
    decoded = Image.open(io.BytesIO(jpeg.data)).convert("RGB")
    reference = Image.open(io.BytesIO(png.data)).convert("RGB")
    assert decoded.size == (200, 120)
    # Blocks inside a tile are its colour (a tile edge may cut a block: not checked there).
    for x, y in ((4, 4), (60, 20), (130, 100), (190, 116)):
        assert (
            max(
                abs(a - b)
                for a, b in zip(decoded.getpixel((x, y)), reference.getpixel((x, y)), strict=True)
            )
            <= 2
        )
    assert len(rough.data) < len(jpeg.data)


async def test_local_makes_lossless_webp_of_the_same_picture() -> None:
    backend = LocalBackend("l", {})
    [png] = await backend.generate(image_request(seed=3, width=200, height=120))
    [webp] = await backend.generate(
        image_request(seed=3, width=200, height=120, output_format="webp")
    )
    assert webp.media_type == "image/webp"
    assert inspect_image(webp.data).media_type == "image/webp"
    decoded = Image.open(io.BytesIO(webp.data))
    assert decoded.format == "WEBP"
    assert (
        decoded.convert("RGB").tobytes()
        == Image.open(io.BytesIO(png.data)).convert("RGB").tobytes()
    )


async def test_local_streams_in_the_requested_format() -> None:
    backend = LocalBackend("l", {})
    request = image_request(stream=True, partial_images=1, output_format="jpeg")
    events = [event async for event in backend.stream(request)]
    assert [event.image.data[:3] for event in events] == [b"\xff\xd8\xff"] * 2
