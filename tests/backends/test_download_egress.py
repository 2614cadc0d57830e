"""The backends that download images (``openai``, ``replicate``) keep to the egress
policy: their ``base_url`` on 127.0.0.1 is trusted (the operator wrote it), the image
URLs their upstream answers with are not, not even on the upstream's own host."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.backends import h1
from gateway.backends.base import BackendContext
from gateway.backends.openai import OpenAIBackend
from gateway.backends.replicate import ReplicateBackend
from gateway.backends.upstream import IMAGE_FETCH_FAILED
from gateway.egress.client import EgressClient
from gateway.egress.policy import EgressPolicy
from gateway.errors import UpstreamError
from tests.support.backend_cases import OPENAI_KEY, REPLICATE_KEY, image_request
from tests.support.providers import OpenAIFake, ReplicateFake, Serve


@pytest.fixture
async def strict_context() -> AsyncIterator[BackendContext]:
    """The gateway's context with an empty ``egress.allow``."""
    api = h1.Client()
    egress = EgressClient(EgressPolicy.from_allow_list([]))
    yield BackendContext(http=egress.session, api=api, egress=egress)
    await egress.close()
    await api.close()


async def test_openai_urls_on_the_upstreams_own_loopback_host_are_not_fetched(
    serve: Serve, strict_context: BackendContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", OPENAI_KEY)
    fake = await serve(OpenAIFake(OPENAI_KEY))
    fake.as_urls = True
    backend = OpenAIBackend(
        "x", {"base_url": fake.base_url, "api_key_env": "TEST_OPENAI_KEY", "model": "dall-e-2"}
    )
    await backend.start(strict_context)

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(image_request(n=2))

    assert caught.value.message == IMAGE_FETCH_FAILED
    assert len(fake.api_requests()) == 1  # the API call itself went through
    assert fake.downloads() == []


async def test_replicate_outputs_on_a_refused_host_are_not_fetched(
    serve: Serve, strict_context: BackendContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_REPLICATE_TOKEN", REPLICATE_KEY)
    fake = await serve(ReplicateFake(REPLICATE_KEY))
    backend = ReplicateBackend(
        "x",
        {
            "base_url": fake.base_url,
            "api_key_env": "TEST_REPLICATE_TOKEN",
            "model": "black-forest-labs/flux-schnell",
            "poll_interval_seconds": 0.01,
        },
    )
    await backend.start(strict_context)

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(image_request(n=2))

    assert caught.value.message == IMAGE_FETCH_FAILED
    assert fake.api_requests()
    assert fake.downloads() == []
