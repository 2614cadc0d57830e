"""The upstream image backend interface.

A backend turns one :class:`ImageRequest` into up to ``n`` images: made from the prompt
(``generate``), from input images, an optional mask and the prompt (``edit``), or from
one input image alone (``variation``). A backend lists the operations it can do in
:attr:`ImageBackend.operations`; the gateway sends it no other. Two shapes fit:

* :class:`ImageBackend` — implement :meth:`~ImageBackend.generate` directly, for
  upstreams that answer a call with images (synchronous HTTP APIs, local models).
* :class:`JobBackend` — implement ``submit``, ``poll`` and ``cancel``, for upstreams
  that run a job (Replicate, ComfyUI, fal): the base class polls until the job ends or
  the deadline passes, and cancels it on timeout.

A backend reports failure only through :class:`~gateway.errors.UpstreamError` and
:class:`~gateway.errors.UpstreamTimeout`; anything else it raises is treated as an
upstream error too. It returns only the images it really has: the gateway charges
exactly ``len(images)``. It never sees the client's credentials.

Third-party backends register a class under the ``gateway.backends`` entry-point
group; the name is the ``type:`` used in ``config.yaml``.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import re
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.backends import base64_codec
from gateway.backends.capabilities import Capabilities, capabilities_option
from gateway.config import ConfigError
from gateway.errors import UpstreamError, UpstreamRefused, UpstreamTimeout

__all__ = [
    "COMMON_OPTIONS",
    "EDIT",
    "GENERATE",
    "VARIATION",
    "BackendContext",
    "GeneratedImage",
    "ImageBackend",
    "ImageBuffer",
    "ImageEvent",
    "ImageRequest",
    "InputImage",
    "JobBackend",
    "JobState",
    "JobStatus",
    "parse_size",
]


_ASCII_DIGITS = re.compile(r"[0-9]+")

#: Options every backend accepts: ``max_n_per_call``, the most images one upstream call
#: may return (a larger ``n`` fans out over parallel calls); ``capabilities``, what of
#: the type's parameters this backend accepts (:mod:`gateway.backends.capabilities`);
#: ``default_size``, what ``size: auto`` means.
COMMON_OPTIONS = ("max_n_per_call", "capabilities", "default_size")
#: ``size: auto`` (and the default size) when the backend offers it and the config does
#: not name another.
PREFERRED_SIZE = "1024x1024"


def parse_size(size: str) -> tuple[int, int] | None:
    """``(width, height)`` for a ``"WIDTHxHEIGHT"`` string, or ``None`` if malformed."""
    width, sep, height = size.partition("x")
    if not sep or not _ASCII_DIGITS.fullmatch(width) or not _ASCII_DIGITS.fullmatch(height):
        return None
    if len(width) > 5 or len(height) > 5:
        return None
    return int(width), int(height)


#: The operations (:attr:`ImageRequest.operation`): images from a prompt, an edit of
#: input images (with an optional mask) by a prompt, variations of one input image.
GENERATE = "generate"
EDIT = "edit"
VARIATION = "variation"


@dataclass(frozen=True, slots=True)
class InputImage:
    """An image the client uploaded (an edit's image or mask, a variation's image),
    checked structurally before any backend sees it."""

    data: bytes
    #: ``image/png``, ``image/jpeg`` or ``image/webp``.
    media_type: str
    width: int
    height: int
    #: The client's file name, or one made from the media type.
    filename: str = "image.png"


# Not frozen: a frozen __init__ costs an object.__setattr__ call per field, and this one
# has 22, made once per request (3.0 µs against 1.0 µs, timeit on the bench machine).
# Nothing changes one after it is made: a fallback or a split call gets a replace().
@dataclass(slots=True)
class ImageRequest:
    prompt: str
    n: int
    width: int
    height: int
    #: The model name the client asked for.
    model: str
    seed: int | None = None
    negative_prompt: str | None = None
    #: The gateway's request id, for correlating upstream logs. Not a secret.
    request_id: str = ""
    #: :data:`GENERATE`, :data:`EDIT` or :data:`VARIATION`.
    operation: str = GENERATE
    #: An edit's images (1-16) or a variation's one image; empty for a generation.
    images: tuple[InputImage, ...] = ()
    #: An edit's mask: a PNG with an alpha channel, the size of ``images[0]``; where it
    #: is transparent is what the edit may change.
    mask: InputImage | None = None
    # OpenAI's parameters, as the client sent them (``None``: not sent, the backend's
    # default); the backend's capabilities were checked before it sees them.
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    #: An edit's ``input_fidelity`` (``high``, ``low``).
    input_fidelity: str | None = None
    #: The client's end-user id (``user``), for the upstream's abuse monitoring.
    user: str | None = None
    #: Partial images as they come (:meth:`ImageBackend.stream`).
    stream: bool = False
    #: Partial images per image when streaming (0-3).
    partial_images: int = 0


#: Image bytes, or their base64 text as ASCII bytes: a ``memoryview`` may be a slice of a
#: larger buffer (the upstream's whole answer), which it keeps alive.
ImageBuffer = bytes | bytearray | memoryview


class GeneratedImage:
    """One image a backend produced: its bytes, media type and the prompt the upstream used.

    An image the upstream sent as base64 is kept as that text (:meth:`from_base64`),
    usually a view into the upstream's answer: the gateway answers in base64 too, so
    those bytes go to the client as they are (:meth:`encoded`), and the image is decoded
    only if :attr:`data` is read.
    """

    __slots__ = ("_b64", "_data", "media_type", "revised_prompt")

    def __init__(
        self,
        data: bytes | bytearray,
        media_type: str = "image/png",
        revised_prompt: str | None = None,
    ) -> None:
        self._data: bytes | bytearray | None = data
        self._b64: ImageBuffer | None = None
        self.media_type = media_type
        self.revised_prompt = revised_prompt

    @classmethod
    def from_base64(
        cls,
        b64: str | ImageBuffer,
        media_type: str = "image/png",
        revised_prompt: str | None = None,
    ) -> GeneratedImage:
        """The image whose bytes ``b64`` encodes.

        ``b64`` must be base64 as encoders write it (padded, no line breaks, nothing
        else): text, or its ASCII bytes, or a view of them, which is kept, not copied.
        """
        image = cls(b"", media_type, revised_prompt)
        image._data = None
        image._b64 = b64.encode("ascii") if isinstance(b64, str) else b64
        return image

    @property
    def data(self) -> bytes:
        """The image's bytes (decoded from its base64, or made immutable, once)."""
        data = self._data
        if data is None:
            data = self._data = base64_codec.decode(self._b64 or b"")
        elif type(data) is not bytes:
            data = self._data = bytes(data)
        return data

    def bytes_only(self) -> bytes:
        """The image's bytes (:attr:`data`), the image then holding only those: its base64
        is let go, and with it the upstream's answer that it is usually a view of.

        For an image that is stored rather than answered as base64: the answer's buffer
        (4/3 of the image) is freed before the store write instead of being held beside
        the decoded bytes until the write is done. :meth:`encoded` still works (it
        encodes the bytes anew).
        """
        data = self.data
        self._b64 = None
        return data

    @property
    def raw(self) -> bytes | bytearray | None:
        """The image's bytes if it holds them (not only their base64), else ``None``."""
        return self._data

    def encoded(self) -> ImageBuffer:
        """The image as base64 (ASCII bytes, maybe a view): what the gateway answers with."""
        if self._b64 is None:
            self._b64 = base64_codec.encode(self._data or b"")
        return self._b64

    def b64(self) -> str:
        """The image as base64 text."""
        return str(self.encoded(), "ascii")

    def __repr__(self) -> str:
        if self._data is not None:
            size = str(len(self._data))
        else:
            size = f"~{len(self._b64 or b'') * 3 // 4}"
        return f"GeneratedImage(<{size} bytes>, {self.media_type!r}, {self.revised_prompt!r})"


@dataclass(frozen=True, slots=True)
class ImageEvent:
    """One event of a streamed call: a partial image, or a completed one."""

    image: GeneratedImage
    #: Which of the request's images it is (0-based).
    index: int = 0
    #: The partial image's index (0-based); ``None``: the image is complete.
    partial_index: int | None = None
    #: What the upstream reported with a completed image (OpenAI's token ``usage``).
    usage: Mapping[str, Any] | None = None

    @property
    def completed(self) -> bool:
        return self.partial_index is None


@dataclass(frozen=True, slots=True)
class BackendContext:
    """What the gateway lends a backend while it runs."""

    #: The process's shared ``aiohttp.ClientSession`` for requests on behalf of
    #: untrusted data: every connection it opens keeps to the egress policy (no
    #: loopback, private or link-local addresses unless ``egress.allow`` lists them).
    #: Calls to a backend's own configured URL belong on ``api``.
    http: Any = None
    #: The process's pooled client for API calls (a :class:`gateway.backends.h1.Client`).
    api: Any = None
    #: The client for URLs that upstreams return (a
    #: :class:`gateway.egress.client.EgressClient`): the policy at connect time,
    #: redirects re-checked.
    egress: Any = None


#: The most models a backend remembers its capabilities for (:meth:`ImageBackend.capabilities_for`).
_MODELS_REMEMBERED = 64


class ImageBackend(abc.ABC):
    #: Sizes accepted when the config does not list its own (``sizes:``).
    default_sizes: Sequence[str] = ("256x256", "512x512", "1024x1024", "1024x1536", "1536x1024")
    #: The options a backend of this type accepts besides ``type`` (and the options
    #: every backend accepts, :data:`COMMON_OPTIONS`).
    options: Sequence[str] = ("sizes", "timeout_seconds")
    #: The operations this backend can do (:data:`GENERATE`, :data:`EDIT`,
    #: :data:`VARIATION`); a request for another is refused before it is admitted.
    operations: frozenset[str] = frozenset({GENERATE})
    #: The parameters (and values) this type carries to its upstream.
    capabilities: Capabilities = Capabilities()
    #: The most a config's ``capabilities:`` may list (``None``: :attr:`capabilities`).
    capability_ceiling: Capabilities | None = None

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        """Validate ``options`` (raising :class:`ConfigError` naming the key) and keep them.

        Must not do I/O: :meth:`start` is where connections are opened.
        """
        self.name = name
        for key in options:
            if key not in self.options and key not in COMMON_OPTIONS:
                raise ConfigError(f"backends.{name}.{key}: unknown key")
        most = options.get("max_n_per_call")
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise ConfigError(f"backends.{name}.max_n_per_call: must be a whole number >= 1")
        #: The most images one upstream call may return (``None``: no limit); a larger
        #: ``n`` is fanned out over parallel calls (:meth:`images_per_call`).
        self.max_n_per_call: int | None = most
        sizes = options.get("sizes", self.default_sizes)
        if not isinstance(sizes, list | tuple) or not sizes:
            raise ConfigError(f"backends.{name}.sizes: must be a list of 'WIDTHxHEIGHT'")
        self.sizes: frozenset[tuple[int, int]] = frozenset()
        parsed = set()
        for size in sizes:
            dims = parse_size(size) if isinstance(size, str) else None
            if dims is None:
                raise ConfigError(f"backends.{name}.sizes: {size!r} is not 'WIDTHxHEIGHT'")
            parsed.add(dims)
        self.sizes = frozenset(parsed)
        self.size_names = tuple(sorted(sizes, key=lambda s: parse_size(s) or (0, 0)))
        default_size = options.get("default_size")
        if default_size is None:
            default_size = PREFERRED_SIZE if (1024, 1024) in parsed else self.size_names[0]
        elif not isinstance(default_size, str) or parse_size(default_size) not in parsed:
            raise ConfigError(f"backends.{name}.default_size: must be one of its sizes")
        #: What ``size: auto`` means for this backend.
        self.default_size: str = default_size
        self._capability_overrides = capabilities_option(
            name, options, self.capability_ceiling or self.capabilities
        )
        self._capabilities_by_model: dict[str, Capabilities] = {}
        timeout = options.get("timeout_seconds", 60.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"backends.{name}.timeout_seconds: must be a number > 0")
        self.timeout_seconds = float(timeout)

    def supports_size(self, width: int, height: int) -> bool:
        return (width, height) in self.sizes

    def model_capabilities(self, model: str) -> Capabilities:
        """What this type accepts for the client's ``model`` (the openai type's depend on
        the upstream's model); the config's ``capabilities:`` then narrows it."""
        return self.capabilities

    def capabilities_for(self, model: str) -> Capabilities:
        """What this backend accepts for ``model``: the type's, as the config overrides.

        Worked out once per model (both depend on the config only, which a reload
        replaces with new backends): a request asks twice, for its check and for the
        fallback chain, and a ``capabilities:`` override cost a ``replace()`` each time.
        """
        known = self._capabilities_by_model
        found = known.get(model)
        if found is None:
            found = self.model_capabilities(model)
            overrides = self._capability_overrides
            if overrides:
                found = dataclasses.replace(found, **overrides)
            if len(known) < _MODELS_REMEMBERED:  # model names come from clients
                known[model] = found
        return found

    def images_per_call(self, request: ImageRequest) -> int | None:
        """The most images one upstream call may return for ``request`` (``None``: any).

        The gateway splits a larger ``n`` into parallel calls of at most this many.
        Defaults to the ``max_n_per_call`` option; a backend whose upstream models
        differ (dall-e-3 takes only n=1) overrides it.
        """
        return self.max_n_per_call

    def check_environment(self, environ: Mapping[str, str]) -> None:  # noqa: B027 - optional hook
        """Raise :class:`ConfigError` naming the option if what :meth:`start` will read
        from ``environ`` (a credential's variable) is missing or unusable.

        ``serve`` and ``check-config`` both call it (:func:`gateway.startup.prepare`)
        before any backend starts, so a config that ``check-config`` passes starts.
        Must not do I/O.
        """

    async def start(self, context: BackendContext) -> None:  # noqa: B027 - optional hook
        """Open connections, warm up. Called once before the first request."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` opened."""

    @abc.abstractmethod
    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        """Produce up to ``request.n`` images for ``request`` (whatever its
        ``operation``, one of :attr:`operations`).

        Returns the images produced (possibly fewer than asked: the gateway charges
        only those). Raises :class:`UpstreamError` when the upstream fails and
        :class:`UpstreamTimeout` when it does not answer within ``timeout_seconds``.
        """

    async def stream(self, request: ImageRequest) -> AsyncGenerator[ImageEvent, None]:
        """Produce ``request.n`` images as events: for each image up to
        ``request.partial_images`` partial ones, then the completed one.

        Only backends whose capabilities say ``stream`` implement it; the gateway checks
        that before calling. Raises as :meth:`generate` does; closing the iterator stops
        the upstream call.
        """
        raise UpstreamError("This image backend cannot stream.")
        yield  # pragma: no cover - makes this an async generator


class JobState(enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: JobState
    images: list[GeneratedImage] = field(default_factory=list)
    error: str | None = None
    #: Set when the job failed through the request's own fault (a content policy).
    refused: UpstreamRefused | None = None


class JobBackend(ImageBackend):
    """A backend whose upstream runs jobs: submit, poll until done, cancel on timeout."""

    poll_interval_seconds: float = 0.5

    @abc.abstractmethod
    async def submit(self, request: ImageRequest) -> tuple[str, JobStatus]:
        """Start a job; its id and its status right after submission (it may be done)."""

    @abc.abstractmethod
    async def poll(self, job_id: str) -> JobStatus:
        """The job's current status."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> None:
        """Stop the job; best effort."""

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        deadline = time.monotonic() + self.timeout_seconds
        job_id, status = await self.submit(request)
        try:
            while status.state is JobState.PENDING:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UpstreamTimeout()
                await asyncio.sleep(min(self.poll_interval_seconds, left))
                status = await self.poll(job_id)
        except BaseException:
            if status.state is JobState.PENDING:
                await asyncio.shield(self._cancel_quietly(job_id))
            raise
        if status.state is JobState.FAILED:
            if status.refused is not None:
                raise status.refused
            raise UpstreamError(status.error or None)
        return status.images[: request.n]

    async def _cancel_quietly(self, job_id: str) -> None:
        try:
            await self.cancel(job_id)
        except Exception:  # best effort: the job's own timeout ends it otherwise
            return
