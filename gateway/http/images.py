"""``POST /v1/images/generations`` (and ``/v1/generate``): the hot path, top to bottom.

authenticate -> validate -> admit (one Redis round trip) -> upstream -> settle -> respond.
With ``stream: true`` the same, the upstream's events answered as they come
(:mod:`gateway.http.streaming`).

Edits and variations (:mod:`gateway.http.edits`) parse their own bodies, then take the
same path from admission on (:func:`make_images`), and jobs admit with
:func:`admit_request` and call :func:`call_backends` too.

The body is decoded straight from its bytes into a :class:`GenerationRequest` (msgspec),
which validates it as it goes: about 0.4 µs for a typical body, where ``orjson.loads``
alone took 0.65 µs before the dict checks; decode + validate as a whole went from 4.0 to
3.7 µs (interleaved micro-benchmark, best of 40 rounds, on the shared 2-core machine).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
from aiohttp import web

from gateway import errors
from gateway.backends.base import EDIT, GeneratedImage, ImageBackend, ImageRequest, parse_size
from gateway.backends.capabilities import check_request, unsupported
from gateway.backends.resilience import GuardedBackend
from gateway.credits.pricing import price
from gateway.http.api_key_auth import authenticate
from gateway.http.body import decode_body
from gateway.http.idempotency import HEADER, IDEMPOTENCY_TAKEN, idempotent
from gateway.http.middlewares import LOG_FIELDS, REQUEST_ID, UPSTREAM_SECONDS
from gateway.http.ratelimit_headers import rate_limit_headers
from gateway.http.relay import ImagesResponse, relay_pieces
from gateway.http.schemas.edits import EditRequest, VariationRequest
from gateway.http.schemas.images import (
    AUTO_SIZE,
    DEFAULT_SIZE,
    GenerationRequest,
    GenerationResponse,
    ImageData,
    ImageOptions,
    ImageUsage,
)
from gateway.keys.cache import KeyRecord
from gateway.limits.decision import ADMITTED, NO_CREDITS, OVER_QUOTA, RATE_LIMITED, Decision
from gateway.metrics import Metrics
from gateway.services import SERVICES, Services
from gateway.storage import STORAGE
from gateway.usage.labels import usage_label

__all__ = [
    "CREDITS_HEADER",
    "GenerationParams",
    "accepts",
    "admit_request",
    "call_backends",
    "check_size",
    "credit_price",
    "generate_images",
    "image_options",
    "make_images",
    "parse_generation",
    "route_model",
    "wants_async",
]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

_OUTCOMES = {
    ADMITTED: "admitted",
    RATE_LIMITED: "rate_limited",
    OVER_QUOTA: "quota_exceeded",
    NO_CREDITS: "insufficient_credits",
}
#: The header saying how many credits the user has left (plans with monthly_credits).
CREDITS_HEADER = "x-credits-remaining"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class GenerationParams:
    model: str
    #: The backends to try, in order (the first, then its fallbacks).
    chain: tuple[GuardedBackend, ...]
    request: ImageRequest
    #: ``b64_json`` or ``url`` (the images stored, their links answered).
    response_format: str = "b64_json"


def parse_generation(
    body: GenerationRequest, services: Services, record: KeyRecord, request_id: str
) -> GenerationParams:
    """What the type does not check: the plan's most images, the model, its sizes and
    capabilities (and the type's two patterns, see :class:`GenerationRequest`).

    Raises the 400/404 error naming the field, with the type's messages.
    """
    messages = GenerationRequest.messages
    if body.prompt.isspace():
        raise errors.InvalidRequest(messages["prompt"], param="prompt")
    most = record.max_images_per_request
    n = 1 if body.n is None else body.n
    if n > most:
        raise errors.InvalidRequest(messages["n"].format(most=most), param="n")

    model_name, chain = route_model(services, body.model)
    backend = chain[0].backend
    size = DEFAULT_SIZE if body.size is None else body.size
    dims = check_size(size, backend, model_name, messages["size"])

    response_format = body.response_format or "b64_json"
    request = ImageRequest(
        prompt=body.prompt,
        n=n,
        width=dims[0],
        height=dims[1],
        model=model_name,
        seed=body.seed,
        negative_prompt=body.negative_prompt,
        request_id=request_id,
        **image_options(body, response_format),
    )
    check_request(request, backend.capabilities_for(model_name), model_name)
    return GenerationParams(
        model=model_name, chain=chain, request=request, response_format=response_format
    )


#: The :class:`ImageRequest` fields a body may carry under the same name (the bodies
#: that lack one send ``None``: a variation has only ``user``).
_OPTION_FIELDS = (
    "quality",
    "style",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "input_fidelity",
    "user",
)


def image_options(
    body: ImageOptions | EditRequest | VariationRequest, response_format: str
) -> dict[str, Any]:
    """The :class:`ImageRequest` fields of OpenAI's parameters, from any image body
    (generations, edits, variations: each declares those OpenAI's endpoint takes); check
    the request against its backend with
    :func:`~gateway.backends.capabilities.check_request` once it is made.

    Raises the 400 for ``stream`` with ``response_format: url`` (events carry base64),
    and for a ``user`` with control characters (it is logged).
    """
    options: dict[str, Any] = {name: getattr(body, name, None) for name in _OPTION_FIELDS}
    user = options["user"]
    if user is not None and not user.isprintable():
        raise errors.InvalidRequest(ImageOptions.messages["user"], param="user")
    stream = bool(getattr(body, "stream", False))
    if stream and response_format == "url":
        raise errors.InvalidRequest(
            "A stream sends its images in its events as base64: send 'response_format':"
            " 'b64_json' (or leave it out) with 'stream': true.",
            param="response_format",
        )
    options["stream"] = stream
    options["partial_images"] = getattr(body, "partial_images", None) or 0
    return options


def route_model(services: Services, model: str | None) -> tuple[str, tuple[GuardedBackend, ...]]:
    """The model's name and its backends (the first, then its fallbacks); 404 naming
    ``model`` if the gateway does not serve it."""
    routed = services.router.for_model(model)
    if routed is None:
        raise errors.ModelNotFound(f"The model '{model}' does not exist.", param="model")
    return routed


def check_size(size: str, backend: ImageBackend, model: str, malformed: str) -> tuple[int, int]:
    """``(width, height)`` of ``size`` (``auto``: the backend's default size) if
    ``backend`` makes it; else the 400 naming ``size`` (``malformed``: the message for a
    size that is not ``WIDTHxHEIGHT``)."""
    if size == AUTO_SIZE:
        size = backend.default_size
    dims = parse_size(size)
    if dims is None:
        raise errors.InvalidRequest(malformed, param="size")
    if not backend.supports_size(*dims):
        raise errors.InvalidRequest(
            f"'size' {size} is not available for model '{model}'; "
            f"choose one of: {', '.join(backend.size_names)}.",
            param="size",
        )
    return dims


_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


async def call_backends(
    chain: tuple[GuardedBackend, ...],
    request: ImageRequest,
    metrics: Metrics,
    spent: list[float] | None = None,
) -> tuple[str, list[GeneratedImage]]:
    """``(backend name, images)`` from the first backend in ``chain`` that delivers;
    each call's seconds appended to ``spent`` (``Server-Timing``).

    Raises the last backend's error when none does.
    """
    error: errors.GatewayError | None = None
    for guarded in chain:
        if not accepts(guarded, request):
            continue
        started = time.perf_counter()
        outcome = "ok"
        try:
            return guarded.name, await guarded.generate(request)
        except errors.UpstreamRefused:
            outcome = "refused"  # the request's own fault: no fallback
            raise
        except errors.UpstreamTimeout as exc:
            outcome, error = "timeout", exc
        except errors.ServiceUnavailable as exc:
            outcome, error = "unavailable", exc
        except errors.UpstreamError as exc:
            outcome, error = "error", exc
        finally:
            elapsed = time.perf_counter() - started
            if spent is not None:
                spent.append(elapsed)
            metrics.labelled(metrics.upstream_seconds, guarded.name).observe(elapsed)
            metrics.labelled(metrics.upstream_calls, guarded.name, outcome).inc()
            if guarded.state is not guarded.reported_state:
                guarded.reported_state = guarded.state
                state = _BREAKER_VALUES[guarded.state.value]
                metrics.labelled(metrics.breaker_state, guarded.name).set(state)
        log.warning("backend %s failed (%s: %s)", guarded.name, error.code, error.message)
    raise error or errors.UpstreamError()


def accepts(guarded: GuardedBackend, request: ImageRequest) -> bool:
    """Whether ``guarded`` can make ``request`` (its size, its operation, its
    parameters): a fallback that cannot is skipped."""
    backend = guarded.backend
    return (
        backend.supports_size(request.width, request.height)
        and request.operation in backend.operations
        and unsupported(request, backend.capabilities_for(request.model)) is None
    )


def credit_price(
    services: Services,
    record: KeyRecord,
    request: ImageRequest,
    quality: str | None = None,
    operation: str | None = None,
) -> int:
    """Credits per image of ``request`` for ``record``'s plan (0 without a credit limit):
    by its model, size, operation (a generation, an edit, a variation) and ``quality``
    (by default the request's)."""
    if record.monthly_credits is None:
        return 0
    if quality is None:
        quality = request.quality
    size = f"{request.width}x{request.height}"
    pricing = services.config.pricing
    return price(pricing, request.model, size, quality, operation or request.operation)


async def admit_request(
    services: Services,
    record: KeyRecord,
    n: int,
    *,
    price: int = 0,
    reference: str = "",
    label: str = "",
) -> Decision:
    """Admit a request for ``n`` images (the rate limit, and ``n`` reserved, and ``n *
    price`` credits when the plan has a credit limit, counted under ``label``: see
    :func:`~gateway.usage.labels.usage_label`): one Redis round trip. Raises the 429
    (rate limit, daily quota), the 402 (credits) or, Redis being unreachable, the 503."""
    metrics = services.metrics
    started = time.perf_counter()
    try:
        decision = await services.admission.admit(
            record, n, price=price, reference=reference, label=label
        )
    except Exception as exc:
        metrics.admissions.labels("error").inc()
        metrics.dependency_errors.labels("redis").inc()
        log.warning("admission unavailable: %s", exc)
        raise errors.ServiceUnavailable(
            "Rate limiting is unavailable, so no request is admitted. Please retry shortly."
        ) from None

    metrics.labelled(metrics.admission_seconds).observe(time.perf_counter() - started)
    outcome = _OUTCOMES[decision.outcome]
    metrics.labelled(metrics.admissions, f"{outcome}_locally" if decision.local else outcome).inc()
    if decision.outcome == NO_CREDITS:
        cost = n * price
        raise errors.InsufficientCredits(
            f"Not enough credits: {n} image{'s' if n != 1 else ''} at {price} credits each"
            f" cost {cost}; the balance is {decision.credits_remaining} credits"
            f" ({decision.monthly_credits} left of this month's allowance,"
            f" {decision.purchased_credits} purchased).",
            param="n" if decision.credits_remaining >= price > 0 else None,
            headers={CREDITS_HEADER: str(decision.credits_remaining)},
        )
    if decision.outcome != ADMITTED:
        headers = rate_limit_headers(decision)
        if decision.outcome == RATE_LIMITED:
            headers["Retry-After"] = str(max(1, math.ceil(decision.requests_reset)))
            raise errors.RateLimitExceeded(
                f"Rate limit of {decision.requests_limit} requests per minute reached. "
                f"Retry after {headers['Retry-After']} s.",
                headers=headers,
            )
        headers["Retry-After"] = str(max(1, decision.images_reset))
        remaining = decision.images_remaining
        raise errors.DailyQuotaExceeded(
            f"Daily quota of {decision.images_limit} images reached"
            + (f" ({remaining} left, {n} asked for)" if remaining else "")
            + ". It resets at 00:00 UTC.",
            param="n" if remaining else None,
            headers=headers,
        )
    return decision


def wants_async(request: web.Request) -> bool:
    """The request says ``Prefer: respond-async`` (RFC 7240; among other preferences)."""
    for value in request.headers.getall("Prefer", ()):
        for preference in value.split(","):
            name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if name == "respond-async":
                return True
    return False


async def generate_images(request: web.Request) -> web.StreamResponse:
    request[UPSTREAM_SECONDS] = []  # the middleware's Server-Timing (replays too)
    incoming = request.headers
    if HEADER in incoming and IDEMPOTENCY_TAKEN not in request:
        return await idempotent(request, generate_images)
    if "Prefer" in incoming and wants_async(request):
        # Imported here: the jobs edge builds on this module. Only this path pays for it.
        from gateway.http.jobs_api import submit_job

        return await submit_job(request, preferred=True)
    services: Services = request.app[SERVICES]
    config = services.config
    now = services.wall_clock()

    record = await authenticate(request, services.keys, config.keys.prefix, now)
    body = await decode_body(
        request, GenerationRequest, config.server, {"most": record.max_images_per_request}
    )
    params = parse_generation(body, services, record, request[REQUEST_ID])
    return await make_images(request, services, record, params, now)


async def make_images(
    request: web.Request,
    services: Services,
    record: KeyRecord,
    params: GenerationParams,
    now: float,
) -> web.StreamResponse:
    """What generations, edits and variations share once the request is parsed: admit
    ``n`` images, call the backends, store the images (``url``), settle what was not
    delivered, answer (as events with ``stream``). Only images the client gets are
    charged."""
    n = params.request.n
    fields = request[LOG_FIELDS]
    fields.update(key_id=record.key_id, user_id=record.user_id, model=params.model, images=0)
    if params.request.user is not None:
        fields["end_user"] = params.request.user
    metrics = services.metrics
    admission = services.admission
    spent = request.get(UPSTREAM_SECONDS)
    if spent is None:
        spent = request[UPSTREAM_SECONDS] = []  # the middleware's Server-Timing
    decision = await admit_request(
        services,
        record,
        n,
        price=credit_price(services, record, params.request),
        reference=request[REQUEST_ID],
        label=usage_label(params.model, params.chain[0].name),
    )
    if params.request.stream:
        # Imported here: only streamed requests pay for it.
        from gateway.http.streaming import stream_images

        kind = "image_edit" if params.request.operation == EDIT else "image_generation"
        return await stream_images(
            request,
            services,
            record,
            params.chain,
            params.request,
            decision,
            kind=kind,
            spent=spent,
        )

    try:
        backend_name, images = await call_backends(params.chain, params.request, metrics, spent)
        delivered = images[:n]
        links = None
        if params.response_format == "url" and delivered:
            links = await _store(request, delivered)
    except BaseException:
        await asyncio.shield(admission.release(record, decision, n))
        raise
    if len(delivered) < n:
        await admission.release(record, decision, n - len(delivered), delivering=len(delivered))
    if not delivered:
        raise errors.UpstreamError("The image backend returned no images.")
    if backend_name != params.chain[0].name:  # a fallback made them: count them under it
        await admission.attribute(record, decision, backend_name, len(delivered))
    fields.update(backend=backend_name, images=len(delivered))
    metrics.labelled(metrics.images_delivered, params.model, record.plan).inc(len(delivered))

    try:
        headers = rate_limit_headers(decision, decision.images_used - (n - len(delivered)))
        headers["X-Gateway-Backend"] = backend_name  # which backend answered (fallbacks)
        if decision.monthly_credits >= 0:
            left = decision.credits_remaining + (n - len(delivered)) * decision.price
            headers[CREDITS_HEADER] = str(left)
            charged = len(delivered) * decision.price
            metrics.labelled(metrics.credits_charged, params.model, record.plan).inc(charged)
        answer = GenerationResponse(
            created=int(now),
            model=params.model,
            data=[  # b64_json left empty: the relay writes each image there as it came
                ImageData(b64_json="", revised_prompt=image.revised_prompt) for image in delivered
            ]
            if links is None
            else [
                ImageData(url=link, revised_prompt=image.revised_prompt)
                for image, link in zip(delivered, links, strict=True)
            ],
            usage=ImageUsage(len(delivered)),
        )
        return ImagesResponse(
            pieces=relay_pieces(_encode(answer), delivered if links is None else []),
            headers=headers,
            on_send=partial(admission.delivered, decision),
        )
    except BaseException:
        admission.delivered(decision)  # the images were made: charged, slot freed
        raise


async def _store(request: web.Request, images: list[GeneratedImage]) -> list[str]:
    """Store ``images`` (in parallel) and return their signed links.

    Each image is decoded and keeps only its bytes before any write starts, so the
    upstream's answer (base64, 4/3 of the images) is freed as the last one lets go of
    it: during the writes a request holds its images' bytes once (obstore's put takes
    them as a buffer, without a copy), not twice (BENCHMARKS.md, "Gu" and "Gs3").

    Raises :class:`~gateway.errors.StorageUnavailable` (503 ``storage_unavailable``) when
    the store fails: the images were made, but the client gets none, so none is charged.
    """
    storage = request.app[STORAGE]
    files = [(image.bytes_only(), image.media_type) for image in images]
    try:
        saved = await asyncio.gather(
            *(storage.save(data, media, request=request) for data, media in files)
        )
    except errors.GatewayError as exc:
        log.warning("storing images failed (%s): %s", exc.code, exc.message)
        raise
    return [file.url for file in saved]
