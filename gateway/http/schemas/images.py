"""``POST /v1/images/generations`` and ``GET /v1/models``: OpenAI's Images API bodies.

What depends on the config (the plan's most images, the model names, each backend's
sizes and capabilities) is checked after decoding, in :mod:`gateway.http.images`, with
the messages below.

OpenAI's parameters of generations are one type, :class:`ImageOptions` (its fields are
keyword-only, so a body type adds its own required fields before them), and each
parameter one annotated type (``Quality``... with its values, limits and description),
which the edit and variation bodies (:mod:`gateway.http.schemas.edits`) declare again
for the parameters OpenAI's endpoints take, with the same messages
(:data:`OPTION_MESSAGES`). The events of a streamed answer are
:class:`PartialImageEvent` and :class:`CompletedImageEvent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from gateway.backends.capabilities import CHOICES, MAX_PARTIAL_IMAGES
from gateway.http.schemas.base import RequestBody

__all__ = [
    "AUTO_SIZE",
    "DEFAULT_SIZE",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "MAX_USER_CHARS",
    "OPTION_MESSAGES",
    "Background",
    "CompletedImageEvent",
    "GenerationRequest",
    "GenerationResponse",
    "ImageData",
    "ImageOptions",
    "ImageUsage",
    "InputFidelity",
    "Model",
    "ModelList",
    "ModelParameters",
    "Moderation",
    "OutputCompression",
    "OutputFormat",
    "PartialImageEvent",
    "PartialImages",
    "Quality",
    "Stream",
    "Style",
    "User",
]

MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**63 - 1
DEFAULT_SIZE = "1024x1024"
SIZE_PATTERN = "^([0-9]+x[0-9]+|auto)$"
#: Not only white space (``str.isspace``, which ``\s`` matches).
PROMPT_PATTERN = r"\S"
#: ``size: auto``: the model's backend's default size.
AUTO_SIZE = "auto"
MAX_USER_CHARS = 256

_BY_BACKEND = " Which of them a model accepts depends on its backend: another is 400 naming"
_BY_BACKEND += " the param and listing what the model accepts."

Quality = Annotated[
    Literal["auto", "standard", "hd", "low", "medium", "high"],
    Meta(
        description="`standard`/`hd` (dall-e-3), `low`/`medium`/`high` (gpt-image, or a"
        " Stable Diffusion backend's steps), `auto`: the backend's default." + _BY_BACKEND
    ),
]
Style = Annotated[Literal["vivid", "natural"], Meta(description="dall-e-3." + _BY_BACKEND)]
Background = Annotated[
    Literal["auto", "transparent", "opaque"],
    Meta(description="`transparent` needs `png` or `webp`." + _BY_BACKEND),
]
OutputFormat = Annotated[
    Literal["png", "jpeg", "webp"],
    Meta(
        description="The images' format: it is also the `Content-Type` of stored images"
        " (`response_format: url`)." + _BY_BACKEND
    ),
]
OutputCompression = Annotated[
    int,
    Meta(ge=0, le=100, description="0-100 %, for `jpeg` and `webp`." + _BY_BACKEND),
]
Moderation = Annotated[
    Literal["auto", "low"], Meta(description="Content moderation strictness." + _BY_BACKEND)
]
User = Annotated[
    str,
    Meta(
        max_length=MAX_USER_CHARS,
        extra_json_schema={"pattern": r"^[^\x00-\x1f\x7f]*$"},
        description="Your end user's id: sent to upstreams that take one (abuse"
        " monitoring) and written to the access log.",
    ),
]
InputFidelity = Annotated[
    Literal["high", "low"],
    Meta(
        description="Edits: how closely the result keeps the input images' details"
        " (gpt-image-1)." + _BY_BACKEND
    ),
]
Stream = Annotated[
    bool | None,
    Meta(
        description="`true`: Server-Sent Events (`text/event-stream`) as OpenAI sends"
        " them: up to `partial_images` `image_generation.partial_image` events per image"
        " (`image_edit.partial_image` for an edit), then its `image_generation.completed`"
        " (`image_edit.completed`) event. Only completed images are charged. A model whose"
        " backend cannot stream answers 400 `param: stream`."
    ),
]
PartialImages = Annotated[
    int,
    Meta(
        ge=0,
        le=MAX_PARTIAL_IMAGES,
        description="With `stream`: partial images sent before each final image"
        f" (0-{MAX_PARTIAL_IMAGES}).",
    ),
]

#: The messages of a bad value of each of OpenAI's parameters, whichever body it is in.
OPTION_MESSAGES: Mapping[str, str] = {
    **{name: f"'{name}' must be one of: {', '.join(values)}." for name, values in CHOICES.items()},
    "output_compression": "'output_compression' must be a whole number from 0 to 100.",
    "user": f"'user' must be a string of at most {MAX_USER_CHARS} characters, without"
    " control characters or line breaks.",
    "stream": "'stream' must be true or false.",
    "partial_images": f"'partial_images' must be a whole number from 0 to {MAX_PARTIAL_IMAGES}.",
}


class ImageOptions(RequestBody, kw_only=True):
    """OpenAI's parameters of a generation (an edit or a variation declares those of
    them its endpoint takes, with the same types)."""

    quality: Quality | None = None
    style: Style | None = None
    background: Background | None = None
    output_format: OutputFormat | None = None
    output_compression: OutputCompression | None = None
    moderation: Moderation | None = None
    user: User | None = None
    stream: Stream = False
    partial_images: PartialImages | None = None

    messages: ClassVar[Mapping[str, str]] = OPTION_MESSAGES


# The two patterns (prompt, size) are documented here but checked after decoding, by
# gateway.http.images.parse_generation with the messages below: a msgspec ``pattern``
# calls into ``re`` and cost about 1 µs each per request, measured, which would make the
# decode slower than the orjson + dict checks it replaced. (A docstring here would be
# the schema's public description.)
class GenerationRequest(ImageOptions):
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
        Meta(
            description="`WIDTHxHEIGHT`, one the model's backend supports, or `auto`: the"
            " backend's default size."
        ),
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

    messages: ClassVar[Mapping[str, str]] = {
        **ImageOptions.messages,
        "prompt": "'prompt' is required: a non-empty string.",
        "prompt:too_long": f"'prompt' must be at most {MAX_PROMPT_CHARS} characters.",
        "n": "'n' must be a whole number from 1 to {most}.",
        "size": "'size' must be 'WIDTHxHEIGHT', e.g. '1024x1024', or 'auto'.",
        "model": "'model' must be a string.",
        "response_format": "'response_format' must be 'b64_json' or 'url'.",
        "seed": f"'seed' must be a whole number from 0 to {MAX_SEED}.",
        "negative_prompt": (
            f"'negative_prompt' must be a string of at most {MAX_PROMPT_CHARS} characters."
        ),
    }


class ImageData(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One image: ``b64_json`` or ``url``, as the request's ``response_format`` asked."""

    b64_json: Annotated[
        str | msgspec.UnsetType,
        Meta(
            description="The image, in the request's `output_format` (PNG by default).",
            extra_json_schema={"contentEncoding": "base64", "contentMediaType": "image/*"},
        ),
    ] = msgspec.UNSET
    url: Annotated[
        str | msgspec.UnsetType,
        Meta(description="A signed, expiring link to the stored image (`response_format: url`)."),
    ] = msgspec.UNSET
    revised_prompt: str | None


class ImageUsage(msgspec.Struct):
    images: Annotated[int, Meta(ge=1, description="Charged.")]


class _ImageEvent(msgspec.Struct, kw_only=True):
    b64_json: Annotated[
        str, Meta(extra_json_schema={"contentEncoding": "base64", "contentMediaType": "image/*"})
    ]
    created_at: Annotated[int, Meta(description="Unix time.")]
    size: Annotated[str, Meta(description="`WIDTHxHEIGHT`.")]
    quality: str
    background: str
    output_format: str


class PartialImageEvent(_ImageEvent, kw_only=True):
    """A coarser version of the image to come (`event: image_generation.partial_image`)."""

    type: Literal["image_generation.partial_image", "image_edit.partial_image"]
    partial_image_index: Annotated[int, Meta(ge=0, description="0-based, per image.")]


class StreamUsage(msgspec.Struct, kw_only=True):
    images: Annotated[int, Meta(ge=1, description="Charged: 1, this image.")]
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, int] = msgspec.field(
        default_factory=lambda: {"image_tokens": 0, "text_tokens": 0}
    )


class CompletedImageEvent(_ImageEvent, kw_only=True):
    """A final image (`event: image_generation.completed`), charged when it is sent."""

    type: Literal["image_generation.completed", "image_edit.completed"]
    usage: Annotated[
        StreamUsage,
        Meta(description="`images`, and the upstream's token counts where it reports them."),
    ]


class GenerationResponse(msgspec.Struct):
    created: Annotated[int, Meta(description="Unix time.")]
    model: str
    data: Annotated[list[ImageData], Meta(min_length=1)]
    usage: ImageUsage


class ModelParameters(msgspec.Struct):
    """What the model's (first) backend accepts of OpenAI's parameters: other values
    are 400 naming the param."""

    quality: list[str]
    style: list[str]
    background: list[str]
    output_format: list[str]
    moderation: list[str]
    input_fidelity: Annotated[list[str], Meta(description="Edits only.")]
    output_compression: bool
    stream: bool


class Model(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    backends: list[str]
    sizes: list[str]
    default_size: Annotated[str, Meta(description="What `size: auto` means.")]
    parameters: ModelParameters


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[Model]
