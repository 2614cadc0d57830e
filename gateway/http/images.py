"""``POST /v1/images/generations`` (and ``/v1/generate``): the hot path, top to bottom.

authenticate -> validate -> admit (one Redis round trip) -> upstream -> settle -> respond.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.backends.base import GeneratedImage, ImageRequest, parse_size
from gateway.backends.resilience import GuardedBackend
from gateway.http.api_key_auth import authenticate
from gateway.http.middlewares import LOG_FIELDS, REQUEST_ID
from gateway.http.ratelimit_headers import rate_limit_headers
from gateway.http.relay import ImagesResponse, images_body
from gateway.http.responses import read_json_object
from gateway.keys.cache import KeyRecord
from gateway.limits.decision import ADMITTED, OVER_QUOTA, RATE_LIMITED
from gateway.metrics import Metrics
from gateway.services import SERVICES, Services

__all__ = ["GenerationParams", "generate_images", "parse_generation"]

log = logging.getLogger(__name__)

_OUTCOMES = {ADMITTED: "admitted", RATE_LIMITED: "rate_limited", OVER_QUOTA: "quota_exceeded"}

MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**63 - 1
DEFAULT_SIZE = "1024x1024"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class GenerationParams:
    model: str
    #: The backends to try, in order (the first, then its fallbacks).
    chain: tuple[GuardedBackend, ...]
    request: ImageRequest


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_PROMPT_CHARS:
        raise errors.InvalidRequest(
            f"'{name}' must be a string of at most {MAX_PROMPT_CHARS} characters.", param=name
        )
    return value


def parse_generation(
    body: dict[str, Any], services: Services, record: KeyRecord, request_id: str
) -> GenerationParams:
    """Validate a generation request body; raises the 400/404 error naming the field."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise errors.InvalidRequest("'prompt' is required: a non-empty string.", param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise errors.InvalidRequest(
            f"'prompt' must be at most {MAX_PROMPT_CHARS} characters.", param="prompt"
        )

    most = record.max_images_per_request
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
        raise errors.InvalidRequest(f"'n' must be a whole number from 1 to {most}.", param="n")

    response_format = body.get("response_format")
    if response_format not in (None, "b64_json"):
        raise errors.InvalidRequest(
            "'response_format' must be 'b64_json'; 'url' is not supported.",
            param="response_format",
        )

    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise errors.InvalidRequest("'model' must be a string.", param="model")
    routed = services.router.for_model(model)
    if routed is None:
        raise errors.ModelNotFound(f"The model '{model}' does not exist.", param="model")
    model_name, chain = routed
    backend = chain[0].backend

    size = body.get("size")
    if size is None:
        size = DEFAULT_SIZE
    dims = parse_size(size) if isinstance(size, str) else None
    if dims is None:
        raise errors.InvalidRequest(
            "'size' must be 'WIDTHxHEIGHT', e.g. '1024x1024'.", param="size"
        )
    if not backend.supports_size(*dims):
        raise errors.InvalidRequest(
            f"'size' {size} is not available for model '{model_name}'; "
            f"choose one of: {', '.join(backend.size_names)}.",
            param="size",
        )

    seed = body.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise errors.InvalidRequest(
            f"'seed' must be a whole number from 0 to {MAX_SEED}.", param="seed"
        )

    return GenerationParams(
        model=model_name,
        chain=chain,
        request=ImageRequest(
            prompt=prompt,
            n=n,
            width=dims[0],
            height=dims[1],
            model=model_name,
            seed=seed,
            negative_prompt=_optional_text(body, "negative_prompt"),
            request_id=request_id,
        ),
    )


_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


async def _call_backends(
    chain: tuple[GuardedBackend, ...], request: ImageRequest, metrics: Metrics
) -> tuple[str, list[GeneratedImage]]:
    """``(backend name, images)`` from the first backend in ``chain`` that delivers.

    Raises the last backend's error when none does.
    """
    error: errors.GatewayError | None = None
    for guarded in chain:
        if not guarded.backend.supports_size(request.width, request.height):
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
            metrics.labelled(metrics.upstream_seconds, guarded.name).observe(elapsed)
            metrics.labelled(metrics.upstream_calls, guarded.name, outcome).inc()
            if guarded.state is not guarded.reported_state:
                guarded.reported_state = guarded.state
                state = _BREAKER_VALUES[guarded.state.value]
                metrics.labelled(metrics.breaker_state, guarded.name).set(state)
        log.warning("backend %s failed (%s: %s)", guarded.name, error.code, error.message)
    raise error or errors.UpstreamError()


async def generate_images(request: web.Request) -> web.StreamResponse:
    services: Services = request.app[SERVICES]
    config = services.config
    request_id = request[REQUEST_ID]
    now = services.wall_clock()

    record = await authenticate(request, services.keys, config.keys.prefix, now)
    body = await read_json_object(request, config.server)
    params = parse_generation(body, services, record, request_id)
    n = params.request.n

    fields = request[LOG_FIELDS]
    fields.update(key_id=record.key_id, user_id=record.user_id, model=params.model, images=0)
    metrics = services.metrics
    admission = services.admission
    started = time.perf_counter()
    try:
        decision = await admission.admit(record, n)
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

    try:
        backend_name, images = await _call_backends(params.chain, params.request, metrics)
    except BaseException:
        await asyncio.shield(admission.release(record.key_id, decision, n))
        raise
    delivered = images[:n]
    if len(delivered) < n:
        await admission.release(
            record.key_id, decision, n - len(delivered), delivering=len(delivered)
        )
    if not delivered:
        raise errors.UpstreamError("The image backend returned no images.")
    fields.update(backend=backend_name, images=len(delivered))

    try:
        headers = rate_limit_headers(decision, decision.images_used - (n - len(delivered)))
        headers["X-Gateway-Backend"] = backend_name  # which backend answered (fallbacks)
        return ImagesResponse(
            pieces=images_body(int(now), params.model, delivered),
            headers=headers,
            on_send=partial(admission.delivered, decision),
        )
    except BaseException:
        admission.delivered(decision)  # the images were made: charged, slot freed
        raise
