"""Decoding a request body into its type: what a client is told when it is wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import msgspec
import pytest
from msgspec import Meta

from gateway import errors
from gateway.http.body import NOT_AN_OBJECT, NOT_JSON, decode
from gateway.http.schemas.base import RequestBody
from gateway.http.schemas.images import GenerationRequest


class Owner(msgspec.Struct):
    owner: Annotated[str, Meta(min_length=1)]


class Upload(RequestBody):
    """A body with nested fields, as edits and variations will have."""

    image: list[Annotated[str, Meta(max_length=3)]]
    metadata: Owner | None = None
    count: Annotated[int, Meta(ge=1, le=9)] = 1

    messages: ClassVar[Mapping[str, str]] = {
        "count": "'count' must be a whole number from 1 to {most}.",
        "metadata.owner": "'metadata.owner' must be a non-empty string.",
    }


def refused(raw: bytes, context: Mapping[str, object] | None = None) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as caught:
        decode(raw, Upload, context)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"image": ["a", "long"]}', "image[1]"),
        (b'{"image": "a"}', "image"),
        (b'{"image": [], "metadata": {"owner": ""}}', "metadata.owner"),
        (b'{"image": [], "metadata": {}}', "metadata.owner"),
        (b'{"image": [], "count": 0}', "count"),
        (b"{}", "image"),
    ],
)
def test_param_names_the_field_as_the_client_wrote_it(raw: bytes, param: str):
    assert refused(raw, {"most": 9}).param == param


def test_messages_say_what_is_allowed():
    assert refused(b'{"image": [], "count": 10}', {"most": 9}).message == (
        "'count' must be a whole number from 1 to 9."
    )
    assert refused(b'{"image": [], "metadata": {"owner": ""}}').message == (
        "'metadata.owner' must be a non-empty string."
    )
    # Fields without a message of their own are told the constraint they broke.
    assert refused(b'{"image": ["long"]}').message == (
        "'image[0]' is not valid: Expected str of length <= 3."
    )
    assert refused(b"{}").message == "'image' is required."


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[1]", NOT_AN_OBJECT),
        (b'"text"', NOT_AN_OBJECT),
        (b"", NOT_JSON),
        (b"{", NOT_JSON),
        (b'{"image": []} trailing', NOT_JSON),
        (b'{"image": [], "count": 1e400}', NOT_JSON),  # beyond a double
        (b'{"image": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", NOT_JSON),
    ],
)
def test_bodies_that_are_not_json_objects(raw: bytes, message: str):
    error = refused(raw)
    assert (error.message, error.param) == (message, None)


def test_unknown_fields_are_ignored():
    body = decode(b'{"image": ["a"], "quality": "hd", "user": {"id": 1}}', Upload)
    assert body == Upload(image=["a"])


def test_generation_defaults_are_openais():
    body = decode(b'{"prompt": "a fox"}', GenerationRequest)
    assert (body.n, body.size, body.response_format, body.stream) == (
        1,
        "1024x1024",
        "b64_json",
        False,
    )
