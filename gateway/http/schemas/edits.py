"""``POST /v1/images/edits`` and ``POST /v1/images/variations``: OpenAI's multipart bodies.

The form's text fields are converted into these types (msgspec, strings coerced to
numbers and booleans as a form carries them), which validates them with the messages
below. A file field holds the client's file name there; the file itself is checked as an
image by :mod:`gateway.http.edits`. What depends on the config (the plan's most images,
the model, its sizes, operations and capabilities) is checked after, as for generations.

OpenAI's parameters are declared with the generations' types and messages
(:mod:`gateway.http.schemas.images`), each body with those its endpoint takes: an edit
all but ``style`` and ``moderation``, plus ``input_fidelity``; a variation only
``user``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from gateway.http.schemas.base import RequestBody
from gateway.http.schemas.images import (
    MAX_PROMPT_CHARS,
    OPTION_MESSAGES,
    PROMPT_PATTERN,
    SIZE_PATTERN,
    Background,
    InputFidelity,
    OutputCompression,
    OutputFormat,
    PartialImages,
    Quality,
    Stream,
    User,
)

__all__ = [
    "EDIT_TEXT_FIELDS",
    "MAX_INPUT_IMAGES",
    "VARIATION_TEXT_FIELDS",
    "EditRequest",
    "VariationRequest",
]

#: The most images one edit takes (``image[]``).
MAX_INPUT_IMAGES = 16

#: A file field, as the API description shows it (the type holds its file name).
_BINARY = {"type": "string", "format": "binary"}
_SIZE = {"pattern": SIZE_PATTERN}

ImageFile = Annotated[str, Meta(extra_json_schema=_BINARY)]


class VariationRequest(RequestBody):
    """OpenAI's image variation request (``multipart/form-data``); unknown fields are
    ignored."""

    image: Annotated[
        ImageFile,
        Meta(description="The image to vary: a PNG, at most `server.max_upload_bytes`."),
    ]
    n: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(description="Images to make: 1 to the plan's `max_images_per_request`."),
    ] = 1
    size: Annotated[
        Annotated[str, Meta(extra_json_schema=_SIZE)] | None,
        Meta(
            description="`WIDTHxHEIGHT`, one the model's backend supports, or `auto` (the"
            " backend's default)."
        ),
    ] = None
    model: Annotated[str | None, Meta(description="Any other name is 404 `model_not_found`.")] = (
        None
    )
    response_format: Annotated[
        Literal["b64_json", "url"] | None,
        Meta(description="`b64_json` (the default) or `url`, as for generations."),
    ] = "b64_json"
    user: User | None = None

    messages: ClassVar[Mapping[str, str]] = {
        "image": "'image' is required: a PNG file.",
        "n": "'n' must be a whole number from 1 to {most}.",
        "size": "'size' must be 'WIDTHxHEIGHT', e.g. '1024x1024', or 'auto'.",
        "model": "'model' must be a string.",
        "response_format": "'response_format' must be 'b64_json' or 'url'.",
        "user": OPTION_MESSAGES["user"],
    }


class EditRequest(RequestBody):
    """OpenAI's image edit request (``multipart/form-data``): `image` or `image[]`, an
    optional `mask`, a `prompt`; unknown fields are ignored."""

    prompt: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_PROMPT_CHARS,
            description="The edit to make; not only white space.",
            extra_json_schema={"pattern": PROMPT_PATTERN},
        ),
    ]
    image: Annotated[
        ImageFile | None,
        Meta(
            description="The image to edit: PNG, JPEG or WebP, at most"
            " `server.max_upload_bytes`. Or send `image[]`."
        ),
    ] = None
    images: Annotated[
        Annotated[list[ImageFile], Meta(max_length=MAX_INPUT_IMAGES)] | None,
        Meta(description=f"1 to {MAX_INPUT_IMAGES} images (PNG, JPEG or WebP), one part each."),
    ] = msgspec.field(default=None, name="image[]")
    mask: Annotated[
        ImageFile | None,
        Meta(
            description="A PNG with an alpha channel, the size of the first image: where it"
            " is transparent is what the edit changes."
        ),
    ] = None
    n: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(description="Images to make: 1 to the plan's `max_images_per_request`."),
    ] = 1
    size: Annotated[
        Annotated[str, Meta(extra_json_schema=_SIZE)] | None,
        Meta(
            description="`WIDTHxHEIGHT`, one the model's backend supports, or `auto` (the"
            " backend's default)."
        ),
    ] = None
    model: Annotated[str | None, Meta(description="Any other name is 404 `model_not_found`.")] = (
        None
    )
    response_format: Annotated[
        Literal["b64_json", "url"] | None,
        Meta(description="`b64_json` (the default) or `url`, as for generations."),
    ] = "b64_json"
    quality: Quality | None = None
    background: Background | None = None
    output_format: OutputFormat | None = None
    output_compression: OutputCompression | None = None
    input_fidelity: InputFidelity | None = None
    stream: Stream = False
    partial_images: PartialImages | None = None
    user: User | None = None

    messages: ClassVar[Mapping[str, str]] = {
        **OPTION_MESSAGES,
        **VariationRequest.messages,
        "image": "Send the image to edit as 'image' (one file) or 'image[]' (1 to"
        f" {MAX_INPUT_IMAGES} files): PNG, JPEG or WebP.",
        "image[]": f"'image[]' must be 1 to {MAX_INPUT_IMAGES} files: PNG, JPEG or WebP.",
        "prompt": "'prompt' is required: a non-empty string.",
        "prompt:too_long": f"'prompt' must be at most {MAX_PROMPT_CHARS} characters.",
    }
    schema_extra: ClassVar[Mapping[str, Any]] = {
        "oneOf": [{"required": ["image"]}, {"required": ["image[]"]}]
    }


def _text_fields(body: type[msgspec.Struct], files: frozenset[str]) -> tuple[str, ...]:
    return tuple(
        field.encode_name
        for field in msgspec.structs.fields(body)
        if field.encode_name not in files
    )


#: The text fields of each form (the others are its files).
EDIT_TEXT_FIELDS = _text_fields(EditRequest, frozenset({"image", "image[]", "mask"}))
VARIATION_TEXT_FIELDS = _text_fields(VariationRequest, frozenset({"image"}))
