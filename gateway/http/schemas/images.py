"""``POST /v1/images/generations`` and ``GET /v1/models``: OpenAI's Images API bodies.

What depends on the config (the plan's most images, the model names, each backend's
sizes) is checked after decoding, in :mod:`gateway.http.images`, with the messages below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from gateway.http.schemas.base import RequestBody

__all__ = [
    "DEFAULT_SIZE",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "GenerationRequest",
    "GenerationResponse",
    "ImageData",
    "ImageUsage",
    "Model",
    "ModelList",
]

MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**63 - 1
DEFAULT_SIZE = "1024x1024"
SIZE_PATTERN = "^[0-9]+x[0-9]+$"
#: Not only white space (``str.isspace``, which ``\s`` matches).
PROMPT_PATTERN = r"\S"


# The two patterns (prompt, size) are documented here but checked after decoding, by
# gateway.http.images.parse_generation with the messages below: a msgspec ``pattern``
# calls into ``re`` and cost about 1 µs each per request, measured, which would make the
# decode slower than the orjson + dict checks it replaced. (A docstring here would be
# the schema's public description.)
class GenerationRequest(RequestBody):
    """OpenAI's Images API request; unknown fields are ignored."""

    prompt: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_PROMPT_CHARS,
            description="What to draw; not only white space.",
            extra_json_schema={"pattern": PROMPT_PATTERN},
        ),
    ]
    n: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(description="Images to make: 1 to the plan's `max_images_per_request`."),
    ] = 1
    size: Annotated[
        Annotated[str, Meta(extra_json_schema={"pattern": SIZE_PATTERN})] | None,
        Meta(description="`WIDTHxHEIGHT`, one the model's backend supports."),
    ] = DEFAULT_SIZE
    model: Annotated[str | None, Meta(description="Any other name is 404 `model_not_found`.")] = (
        None
    )
    response_format: Annotated[
        Literal["b64_json", "url"] | None,
        Meta(
            description="`b64_json` (the default): the images in the body; `url`: each image"
            " stored, and a signed link to it (`GET /v1/files/{file_id}`) that works for"
            " `storage.url_ttl_seconds` without an API key."
        ),
    ] = "b64_json"
    seed: Annotated[int, Meta(ge=0, le=MAX_SEED)] | None = None
    negative_prompt: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)] | None = None
    stream: Annotated[
        bool | None, Meta(description="Streaming is not supported yet: `true` is refused.")
    ] = False

    messages: ClassVar[Mapping[str, str]] = {
        "prompt": "'prompt' is required: a non-empty string.",
        "prompt:too_long": f"'prompt' must be at most {MAX_PROMPT_CHARS} characters.",
        "n": "'n' must be a whole number from 1 to {most}.",
        "size": "'size' must be 'WIDTHxHEIGHT', e.g. '1024x1024'.",
        "model": "'model' must be a string.",
        "response_format": "'response_format' must be 'b64_json' or 'url'.",
        "seed": f"'seed' must be a whole number from 0 to {MAX_SEED}.",
        "negative_prompt": (
            f"'negative_prompt' must be a string of at most {MAX_PROMPT_CHARS} characters."
        ),
        "stream": "'stream' must be true or false.",
    }


class ImageData(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One image: ``b64_json`` or ``url``, as the request's ``response_format`` asked."""

    b64_json: Annotated[
        str | msgspec.UnsetType,
        Meta(extra_json_schema={"contentEncoding": "base64", "contentMediaType": "image/png"}),
    ] = msgspec.UNSET
    url: Annotated[
        str | msgspec.UnsetType,
        Meta(description="A signed, expiring link to the stored image (`response_format: url`)."),
    ] = msgspec.UNSET
    revised_prompt: str | None


class ImageUsage(msgspec.Struct):
    images: Annotated[int, Meta(ge=1, description="Charged.")]


class GenerationResponse(msgspec.Struct):
    created: Annotated[int, Meta(description="Unix time.")]
    model: str
    data: Annotated[list[ImageData], Meta(min_length=1)]
    usage: ImageUsage


class Model(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    backends: list[str]
    sizes: list[str]


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[Model]
