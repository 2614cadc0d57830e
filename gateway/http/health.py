"""Health, readiness and the model list."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway.backends.capabilities import Capabilities
from gateway.http.api_key_auth import authenticate
from gateway.http.responses import json_response
from gateway.http.schemas.errors import ErrorDetail
from gateway.http.schemas.health import Health, NotReady, Readiness, ReadyChecks
from gateway.http.schemas.images import Model, ModelList, ModelParameters
from gateway.metrics import CONTENT_TYPE_LATEST
from gateway.services import SERVICES

__all__ = ["healthz", "list_models", "metrics", "readyz"]

_CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return json_response(Health(status="ok"))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, summed over every worker process."""
    services = request.app[SERVICES]
    stats = services.flusher.stats
    # Never flushed yet: the time since it started, so a flusher that never succeeds shows.
    since = stats.last_success if stats.last_success is not None else stats.started
    services.metrics.flush_lag.set(time.monotonic() - since)
    services.metrics.flush_pending.set(stats.rows_last_flush)
    body = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz(request: web.Request) -> web.Response:
    """Postgres and Redis are both reachable; 503 naming the one that is not."""
    services = request.app[SERVICES]
    if services.draining:
        return json_response(
            NotReady(
                status="draining",
                error=_unavailable("Shutting down: not taking new requests."),
            ),
            status=503,
        )

    async def postgres() -> None:
        async with services.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def redis() -> None:
        await services.redis.ping()

    checks: dict[str, str] = {}
    for name, probe in (("postgres", postgres), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), _CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unreachable: {type(exc).__name__}"
    down = [name for name, state in checks.items() if state != "ok"]
    if not down:
        return json_response(Readiness(status="ready", checks=ReadyChecks("ok", "ok")))
    return json_response(
        NotReady(
            status="unavailable",
            checks=checks,
            error=_unavailable(f"Not ready: {' and '.join(down)} unreachable."),
        ),
        status=503,
    )


def _unavailable(message: str) -> ErrorDetail:
    return ErrorDetail(message, "server_error", None, "service_unavailable")


async def list_models(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await authenticate(request, services.keys, services.config.keys.prefix, services.wall_clock())
    return json_response(
        ModelList(
            object="list",
            data=[
                Model(
                    id=model,
                    object="model",
                    created=0,
                    owned_by="image-gateway",
                    backends=[guarded.name for guarded in chain],
                    sizes=list(chain[0].backend.size_names),
                    default_size=chain[0].backend.default_size,
                    parameters=_parameters(chain[0].backend.capabilities_for(model)),
                )
                for model, chain in services.router.models.items()
            ],
        )
    )


def _parameters(capabilities: Capabilities) -> ModelParameters:
    return ModelParameters(
        quality=list(capabilities.quality),
        style=list(capabilities.style),
        background=list(capabilities.background),
        output_format=list(capabilities.output_format),
        moderation=list(capabilities.moderation),
        input_fidelity=list(capabilities.input_fidelity),
        output_compression=capabilities.output_compression,
        stream=capabilities.stream,
    )
