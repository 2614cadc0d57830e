"""``create_app(config)``: the one place where the parts are wired together.

Nothing connects at import time. Resources open in a cleanup context when the app
starts and close in reverse when it stops; a final usage flush runs before Redis and
Postgres are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from gateway.accounts.mail import Mailer
from gateway.accounts.passwords import PasswordHasher
from gateway.accounts.sessions import TokenDenylist
from gateway.accounts.throttle import IpThrottle, LoginGuard
from gateway.accounts.tokens import TokenIssuer
from gateway.backends import h1
from gateway.backends.base import BackendContext, ImageBackend
from gateway.backends.registry import BackendRegistry
from gateway.billing.events import BillingEventSender
from gateway.config import Config, DatabaseConfig
from gateway.console import setup_console
from gateway.credits.balances import CreditBook
from gateway.db import billing as billing_store
from gateway.db.pool import connection, create_pool
from gateway.egress.client import EgressClient
from gateway.egress.policy import EgressPolicy
from gateway.http.client_ip import ClientIp
from gateway.http.images import call_backends
from gateway.http.jobs_api import job_of
from gateway.http.middlewares import request_context_middleware
from gateway.http.routes import setup_routes
from gateway.idempotency.store import IdempotencyStore
from gateway.jobs import store as job_store
from gateway.jobs.queue import JobQueue
from gateway.jobs.runner import JobRunner
from gateway.jobs.settlement import Settlement
from gateway.keys.cache import KeyCache, KeyStore, PostgresKeyStore
from gateway.limits.admission import Admission
from gateway.limits.journal import Journal, default_directory
from gateway.limits.local import LocalAdmission
from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.redis.client import create_hot_redis, create_redis
from gateway.redis.layout import RedisLayout, job_cancel_channel, job_stream
from gateway.reload import RELOADER, ConfigReloader
from gateway.services import CONFIG, SERVICES, Services
from gateway.startup import DEV_MODE_WARNING, StartupError, prepare
from gateway.storage import STORAGE, storage_context
from gateway.usage.flusher import PostgresSeeds, UsageFlusher
from gateway.webhooks.sender import WebhookSender
from gateway.webhooks.signing import SecretDeriver

__all__ = ["create_app", "open_postgres"]

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
    public_api: bool = True,
    config_path: Path | None = None,
) -> web.Application:
    """Build the gateway application.

    The keyword arguments are for tests: ``key_store`` wraps the pool (to count
    queries), the clocks pin time (``limiter_clock`` replaces Redis's own clock in the
    admission script). ``dev`` allows starting without a JWT secret (one is generated).
    ``public_api`` False: a job worker, serving health and metrics only. ``config_path``:
    the file a config reload (SIGHUP) reads again.

    Raises :class:`ConfigError` for what :func:`gateway.startup.prepare` finds. Start-up
    (the app's cleanup context) raises :class:`StartupError` when Postgres is
    unreachable, and closes whatever it had opened when any step fails.
    """
    prepared = prepare(config, dev=dev, registry=registry, clock=monotonic)
    config, router = prepared.config, prepared.router
    if prepared.generated_jwt_secret:
        log.warning(DEV_MODE_WARNING)
    tokens = TokenIssuer(config.auth.jwt_secrets, config.auth.token_ttl_seconds, wall_clock)
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
        # Whatever was opened is closed, in reverse, also when a later step fails.
        async with contextlib.AsyncExitStack() as opened:
            opened.callback(access_log.flush)
            pool = await open_postgres(config.database)
            opened.push_async_callback(pool.close)
            redis = create_redis(config.redis)
            opened.push_async_callback(redis.aclose)
            hot_redis = create_redis(config.redis, hot_path=True)  # key cache entries, releases
            opened.push_async_callback(hot_redis.aclose)
            layout = RedisLayout(config.redis.key_prefix)
            store = key_store(pool) if key_store is not None else PostgresKeyStore(pool)
            # The hot path's pipelined connection (one per primary on a cluster):
            # admissions and key lookups.
            pipelined = create_hot_redis(config.redis)
            opened.push_async_callback(pipelined.aclose)
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
                on_lookup=lambda layer, hit: metrics.labelled(
                    metrics.key_lookups, layer, hit
                ).inc(),
            )
            opened.push_async_callback(keys.close)
            seeds = PostgresSeeds(pool)
            fallback = None
            if config.redis.on_failure == "open":
                fallback = LocalAdmission(redis, layout, seeds, clock=wall_clock)
            journal = Journal(
                Path(config.usage.journal_dir)
                if config.usage.journal_dir
                else default_directory(config.redis.url, config.redis.key_prefix)
            )
            try:
                journal.open()
            except OSError as exc:
                raise StartupError(
                    f"cannot open the reservation journal in {journal.directory}: "
                    f"{exc.strerror or exc}"
                ) from None
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

            def close_journal() -> None:
                # Admissions whose reply never came are left in the journal, and its lock
                # held until this process exits (a request cut off by its client may
                # still be running); then another process settles them.
                if not admission.doubtful:
                    journal.close()

            opened.callback(close_journal)
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
            opened.push_async_callback(egress.close)
            api = h1.Client(
                max_connections=config.server.upstream_max_connections,
                max_per_host=config.server.upstream_max_connections_per_host,
            )
            opened.push_async_callback(api.close)
            context = BackendContext(http=egress.session, api=api, egress=egress)
            for guarded in router.backends.values():
                await guarded.backend.start(context)
                opened.push_async_callback(_close_quietly, guarded.backend)
            services = app[SERVICES] = Services(
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
                denylist=TokenDenylist(redis, config.redis.key_prefix, wall_clock),
                mailer=Mailer(config.email) if config.email.smtp_url else None,
                login_guard=LoginGuard(
                    redis,
                    config.redis.key_prefix,
                    config.auth.login_failures_before_delay,
                    config.auth.max_login_delay_seconds,
                ),
                client_ip=client_ip,
                metrics=metrics,
                idempotency=IdempotencyStore(
                    redis,
                    config.redis.key_prefix,
                    ttl_seconds=config.idempotency.ttl_hours * 3600,
                    in_flight_seconds=config.idempotency.in_flight_seconds,
                    timeout=config.redis.socket_timeout_seconds,
                ),
                webhook_secrets=SecretDeriver(
                    config.webhooks.secret_key or config.auth.jwt_secrets[0]
                ),
                credits=CreditBook(
                    redis,
                    layout,
                    seeds,
                    wall_clock,
                    timeout=config.redis.socket_timeout_seconds,
                ),
            )
            # SIGHUP: config.yaml again, its live part applied (gateway/reload.py).
            reloader = app[RELOADER] = ConfigReloader(
                path=config_path,
                services=services,
                context=context,
                metrics=metrics,
                dev=dev,
                registry=registry,
                clock=monotonic,
            )
            opened.push_async_callback(reloader.close)
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

    async def start_draining(app: web.Application) -> None:
        services = app[SERVICES]
        services.draining = True
        if services.jobs is not None:  # no new job from now; the running ones' grace starts
            services.jobs.begin_stop()

    app.cleanup_ctx.append(resources)
    # Stored images and their links (response_format "url", GET /v1/files/{file_id}).
    app.cleanup_ctx.append(
        storage_context(
            config.storage,
            metrics=metrics,
            dev=dev,
            clock=wall_clock,
            trusted_proxies=config.auth.trusted_proxies,
            derive_from=config.auth.jwt_secrets,
        )
    )
    # The job workers, last: they use everything above, and stop first.
    app.cleanup_ctx.append(billing_context)
    app.cleanup_ctx.append(jobs_context)
    app.on_shutdown.append(start_draining)
    setup_routes(app, public_api=public_api, serve_metrics=not config.server.metrics_port)
    if public_api and config.console.enabled:
        setup_console(app, dev=dev)
    return app


async def billing_context(app: web.Application) -> AsyncIterator[None]:
    """Usage and credit events for ``billing.events_url``: made by Postgres while it is
    set (said at every start, so turning it off stops them), sent by every process."""
    services = app[SERVICES]
    config = services.config.billing
    async with connection(services.pool) as conn:
        await billing_store.want_events(conn, bool(config.events_url))
    if not config.events_url:
        yield
        return
    egress = EgressClient(
        EgressPolicy.from_allow_list(services.config.egress.allow),
        limit=4,
        max_redirects=0,
    )
    sender = BillingEventSender(
        config=config,
        pool=services.pool,
        egress=egress,
        metrics=services.metrics,
        wall_clock=services.wall_clock,
    )
    sending = asyncio.create_task(sender.run(), name="billing-events")
    try:
        yield
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await egress.close()


async def jobs_context(app: web.Application) -> AsyncIterator[None]:
    """The job queue and this process's workers (``app[SERVICES].jobs``)."""
    services = app[SERVICES]
    config = services.config
    pool = services.pool
    # Blocking stream reads: a client without a socket timeout, each call bounded.
    jobs_redis = create_redis(config.redis, hot_path=True)

    async def unfinished_jobs() -> list[str]:
        async with connection(pool) as conn:
            return await job_store.unfinished_ids(conn, config.redis.key_prefix)

    runner = JobRunner(
        config=config.jobs,
        namespace=config.redis.key_prefix,
        pool=pool,
        redis=services.redis,
        queue=JobQueue(
            jobs_redis,
            job_stream(config.redis.key_prefix),
            timeout=config.redis.socket_timeout_seconds,
            rebuild=unfinished_jobs,
        ),
        router=services.router,
        settlement=Settlement(pool, services.admission, services.wall_clock),
        metrics=services.metrics,
        call_backends=call_backends,
        storage=app.get(STORAGE),
        cancel_channel=job_cancel_channel(config.redis.key_prefix),
        wall_clock=services.wall_clock,
    )
    # Webhooks go where users said: the egress policy, and no redirects at all.
    webhook_egress = EgressClient(
        EgressPolicy.from_allow_list(config.egress.allow),
        limit=config.server.upstream_max_connections,
        max_redirects=0,
    )
    runner.webhook_egress = webhook_egress
    storage = app.get(STORAGE)

    async def render(row: job_store.JobRow) -> Any:
        return msgspec.to_builtins(await job_of(row, storage))

    sender = WebhookSender(
        config=config.webhooks,
        namespace=config.redis.key_prefix,
        pool=pool,
        egress=webhook_egress,
        secrets=services.webhook_secrets,
        render=render,
        metrics=services.metrics,
        wall_clock=services.wall_clock,
    )
    runner.webhook_due = sender.wake
    sending = None
    try:
        await runner.start()
        services.jobs = runner
        sending = asyncio.create_task(sender.run(), name="webhooks")
        yield
    finally:
        # The jobs first: the webhooks of those ending within the grace are sent meanwhile.
        await runner.close()
        if sending is not None:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        await jobs_redis.aclose()
        await webhook_egress.close()


async def open_postgres(database: DatabaseConfig) -> Any:
    """The pool, with a connection made and tried (``pool_min_size`` may be 0).

    Raises :class:`StartupError` saying where Postgres was looked for (never the URL's
    password) and why it could not be reached.
    """
    pool = None
    try:
        pool = await create_pool(database)
        await pool.execute("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if pool is not None:
            pool.terminate()
        parts = urllib.parse.urlsplit(database.url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(exc, TimeoutError):
            reason = "timed out"
        else:
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise StartupError(f"cannot connect to Postgres at {where}: {reason}") from None
    return pool


async def _close_quietly(backend: ImageBackend) -> None:
    with contextlib.suppress(Exception):
        await backend.close()
