"""The contract every upstream backend keeps, run against each type and a fake upstream.

What the gateway relies on: exactly the images the upstream made, decodable; failures
only as ``UpstreamError``, with messages that never hold a credential; a hanging
upstream ends with the caller's timeout; only the upstream's own credentials go out;
config mistakes name their key.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.backends.base import BackendContext
from gateway.config import ConfigError
from gateway.errors import UpstreamError, UpstreamRefused
from tests.support.backend_cases import CASES, Case, image_request
from tests.support.providers import ProviderFake, Serve, decode_png


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Case:
    chosen: Case = request.param
    for name, value in chosen.env.items():
        monkeypatch.setenv(name, value)
    return chosen


@pytest.fixture
async def fake(case: Case, serve: Serve) -> ProviderFake:
    return await serve(case.make_fake())


async def test_one_image(case: Case, fake: ProviderFake, context: BackendContext) -> None:
    backend = await case.started(fake, context)
    request = image_request(n=1)

    images = await backend.generate(request)

    assert len(images) == 1
    assert images[0].media_type == "image/png"
    assert decode_png(images[0].data)
    [call] = fake.api_requests()
    case.check_request(call, request)


async def test_several_images(case: Case, fake: ProviderFake, context: BackendContext) -> None:
    backend = await case.started(fake, context)
    request = image_request(n=3, seed=42)

    images = await backend.generate(request)

    assert len(images) == 3
    assert all(decode_png(image.data) for image in images)
    assert len({image.data for image in images}) == 3
    calls = [r for r in fake.api_requests() if r.method == "POST"]
    assert len(calls) == case.calls_for(3)
    case.check_request(calls[0], request)


async def test_refused_request_is_an_upstream_error_without_the_credential(
    case: Case, fake: ProviderFake, context: BackendContext
) -> None:
    backend = await case.started(fake, context)
    fake.mode = "bad_request"

    with pytest.raises(UpstreamRefused) as caught:
        await backend.generate(image_request())

    # A 400 for the client, not a 502: the upstream is fine, the request was refused.
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert "The prompt was rejected" in caught.value.message
    assert fake.secret not in caught.value.message
    assert "[redacted]" in caught.value.message


async def test_rejected_credentials(
    case: Case, fake: ProviderFake, context: BackendContext
) -> None:
    backend = await case.started(fake, context)
    fake.mode = "unauthorized"

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(image_request())

    assert caught.value.message == "The image backend rejected the gateway's credentials."
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("mode", "status", "retryable", "retry_after"),
    [
        ("rate_limited", 429, True, 7.0),
        ("unavailable", 503, True, None),
        ("server_error", 500, False, None),
    ],
)
async def test_upstream_failure_is_an_upstream_error(
    case: Case,
    fake: ProviderFake,
    context: BackendContext,
    mode: str,
    status: int,
    retryable: bool,
    retry_after: float | None,
) -> None:
    backend = await case.started(fake, context)
    fake.mode = mode

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(image_request())

    assert caught.value.message == f"The image backend answered with HTTP {status}."
    assert (caught.value.retryable, caught.value.retry_after) == (retryable, retry_after)


async def test_unreachable_upstream_is_a_retryable_upstream_error(
    case: Case, fake: ProviderFake, context: BackendContext
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = case.backend(
        fake, base_url=fake.base_url.replace(fake.origin, f"http://127.0.0.1:{port}")
    )
    await backend.start(context)

    with pytest.raises(UpstreamError, match="could not be reached") as caught:
        await backend.generate(image_request())

    assert caught.value.retryable


@pytest.mark.parametrize("mode", ["not_json", "no_images"])
async def test_malformed_answer_is_an_upstream_error(
    case: Case, fake: ProviderFake, context: BackendContext, mode: str
) -> None:
    backend = await case.started(fake, context)
    fake.mode = mode

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(image_request())

    assert not caught.value.retryable


async def test_hanging_upstream_ends_with_the_callers_timeout(
    case: Case, fake: ProviderFake, context: BackendContext
) -> None:
    backend = await case.started(fake, context)
    fake.mode = "hang"

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await backend.generate(image_request())

    assert fake.api_requests(), "the request reached the upstream"


async def test_only_the_upstream_credentials_are_sent(
    case: Case, fake: ProviderFake, context: BackendContext
) -> None:
    backend = await case.started(fake, context)

    await backend.generate(image_request(n=2))

    assert fake.api_requests()
    for recorded in fake.api_requests():
        assert recorded.credentials() == case.credentials
    for recorded in fake.downloads():
        assert recorded.credentials() == {}, "downloads carry no credentials"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"base_url": "ftp://images.example"}, "base_url"),
        ({"base_url": 42}, "base_url"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"sizes": ["big"]}, "sizes"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_bad_option_names_its_key(
    case: Case, fake: ProviderFake, options: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^backends\.x\.{key}: "):
        case.backend(fake, **options)


async def test_credentials_in_base_url_are_refused_without_echoing_them(
    case: Case, fake: ProviderFake
) -> None:
    with pytest.raises(ConfigError, match=r"^backends\.x\.base_url: ") as caught:
        case.backend(fake, base_url="https://admin:hunter2@images.example/v1")

    assert "hunter2" not in str(caught.value)


async def test_a_credential_pasted_instead_of_a_variable_name_is_not_echoed(
    case: Case, fake: ProviderFake
) -> None:
    pasted = case.env[case.credential_env]
    with pytest.raises(ConfigError, match=rf"^backends\.x\.{case.credential_option}: ") as caught:
        case.backend(fake, **{case.credential_option: pasted})

    assert pasted not in str(caught.value)


async def test_missing_credential_variable_fails_at_start(
    case: Case,
    fake: ProviderFake,
    context: BackendContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(case.credential_env)
    backend = case.backend(fake)  # constructing does no I/O and reads no secrets

    with pytest.raises(ConfigError) as caught:
        await backend.start(context)

    assert str(caught.value) == (
        f"backends.x.{case.credential_option}: environment variable"
        f" {case.credential_env} is not set"
    )
    assert fake.requests == []
