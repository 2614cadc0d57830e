"""``create_app(config)``: the one place where the parts are wired together.

Nothing connects at import time. Resources open in a cleanup context when the app
starts and close in reverse when it stops; a final usage flush runs before Redis and
Postgres are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from gateway.accounts.passwords import PasswordHasher
from gateway.accounts.throttle import IpThrottle, LoginGuard
from gateway.accounts.tokens import TokenIssuer
from gateway.backends import h1
from gateway.backends.base import BackendContext
from gateway.backends.registry import BackendRegistry, Router, default_registry
from gateway.config import Config, ConfigError
from gateway.db.pool import create_pool
from gateway.egress.client import EgressClient
from gateway.egress.policy import EgressPolicy
from gateway.http.client_ip import ClientIp
from gateway.http.middlewares import request_context_middleware
from gateway.http.routes import setup_routes
from gateway.keys.cache import KeyCache, KeyStore, PostgresKeyStore
from gateway.limits.admission import Admission
from gateway.limits.journal import Journal, default_directory
from gateway.limits.local import LocalAdmission
from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.redis.client import create_redis
from gateway.redis.layout import RedisLayout
from gateway.redis.pipelined import PipelinedRedis
from gateway.services import CONFIG, SERVICES, Services
from gateway.usage.flusher import PostgresSeeds, UsageFlusher

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    config: Config,
    *,
    registry: BackendRegistry | None = None,
    key_store: Callable[[object], KeyStore] | None = None,
    wall_clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    limiter_clock: Callable[[], float] | None = None,
    dev: bool = False,
) -> web.Application:
    """Build the gateway application.

    The keyword arguments are for tests: ``key_store`` wraps the pool (to count
    queries), the clocks pin time (``limiter_clock`` replaces Redis's own clock in the
    admission script). ``dev`` allows starting without a JWT secret (one is generated).
    """
    router = Router(config, registry or default_registry(), monotonic)  # validates backends
    jwt_secrets = config.auth.jwt_secrets
    if not jwt_secrets:
        if not dev:
            raise ConfigError(
                "auth.jwt_secrets: a secret of at least 32 bytes is required "
                "(set GATEWAY_JWT_SECRET), or run in development mode (serve --dev)"
            )
        log.warning(
            "development mode: signing access tokens with a generated secret; "
            "tokens will not survive a restart"
        )
        jwt_secrets = (secrets.token_urlsafe(48),)
    tokens = TokenIssuer(jwt_secrets, config.auth.token_ttl_seconds, wall_clock)
    passwords = PasswordHasher(config.auth.bcrypt_cost)
    client_ip = ClientIp(config.auth.trusted_proxies)
    metrics = Metrics()
    access_log = AccessLog(flush_seconds=config.logging.access_log_flush_seconds)
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[
            request_context_middleware(metrics, access_log, key_prefix=config.keys.prefix)
        ],
    )
    app[CONFIG] = config

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(config.database)
        redis = create_redis(config.redis)
        hot_redis = create_redis(config.redis, hot_path=True)  # key cache entries, releases
        layout = RedisLayout(config.redis.key_prefix)
        store = key_store(pool) if key_store is not None else PostgresKeyStore(pool)
        # The hot path's one pipelined connection: admissions and key lookups.
        pipelined = PipelinedRedis(config.redis.url, timeout=config.redis.socket_timeout_seconds)
        keys = KeyCache(
            redis=hot_redis,
            lookups=pipelined,
            timeout=config.redis.socket_timeout_seconds,
            store=store,
            config=config.keys,
            plans=config.plans,
            default_plan=config.default_plan,
            redis_prefix=config.redis.key_prefix,
            clock=monotonic,
            on_lookup=lambda layer, hit: metrics.labelled(metrics.key_lookups, layer, hit).inc(),
        )
        seeds = PostgresSeeds(pool)
        fallback = None
        if config.redis.on_failure == "open":
            fallback = LocalAdmission(redis, layout, seeds, clock=wall_clock)
        journal = Journal(
            Path(config.usage.journal_dir)
            if config.usage.journal_dir
            else default_directory(config.redis.url, config.redis.key_prefix)
        )
        journal.open()
        admission = Admission(
            hot_redis,
            layout,
            seeds,
            hot=pipelined,
            clock=limiter_clock,
            fallback=fallback,
            timeout=config.redis.socket_timeout_seconds,
            journal=journal,
        )
        flusher = UsageFlusher(
            redis=redis,
            pool=pool,
            layout=layout,
            admission=admission,
            interval=config.usage.flush_interval_seconds,
            clock=monotonic,
            on_failure=lambda exc: metrics.flush_failed(exc),
        )
        # Image URLs from upstream answers are untrusted: their connections keep to the
        # egress policy. API calls to the configured base URLs go through `api`.
        egress = EgressClient(
            EgressPolicy.from_allow_list(config.egress.allow),
            limit=config.server.upstream_max_connections,
            limit_per_host=config.server.upstream_max_connections_per_host,
        )
        api = h1.Client(
            max_connections=config.server.upstream_max_connections,
            max_per_host=config.server.upstream_max_connections_per_host,
        )
        for guarded in router.backends.values():
            await guarded.backend.start(BackendContext(http=egress.session, api=api, egress=egress))
        app[SERVICES] = Services(
            config=config,
            pool=pool,
            redis=redis,
            layout=layout,
            keys=keys,
            admission=admission,
            flusher=flusher,
            router=router,
            wall_clock=wall_clock,
            tokens=tokens,
            passwords=passwords,
            ip_throttle=IpThrottle(redis, config.redis.key_prefix),
            login_guard=LoginGuard(
                redis,
                config.redis.key_prefix,
                config.auth.login_failures_before_delay,
                config.auth.max_login_delay_seconds,
            ),
            client_ip=client_ip,
            metrics=metrics,
        )
        services = app[SERVICES]
        tasks = [
            asyncio.create_task(keys.listen_for_invalidations(), name="key-invalidations"),
            asyncio.create_task(flusher.run(), name="usage-flusher"),
        ]
        try:
            yield
        finally:
            services.draining = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await flusher.flush()
            except Exception:
                log.exception("final usage flush failed; the counts stay pending in Redis")
            if not admission.doubtful:
                journal.close()
            # else: admissions whose reply never came are left in the journal, and its
            # lock held until this process exits (a request cut off by its client may
            # still be running); then another process settles them.
            await keys.close()
            for guarded in router.backends.values():
                with contextlib.suppress(Exception):
                    await guarded.backend.close()
            await egress.close()
            await api.close()
            await redis.aclose()
            await hot_redis.aclose()
            await pipelined.aclose()
            await pool.close()
            access_log.flush()

    async def start_draining(app: web.Application) -> None:
        app[SERVICES].draining = True

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(start_draining)
    setup_routes(app)
    return app
