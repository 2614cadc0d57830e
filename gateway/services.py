"""The parts of a running gateway, as the HTTP edge reaches them (``app[SERVICES]``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from gateway.accounts.mail import Mailer
from gateway.accounts.passwords import PasswordHasher
from gateway.accounts.sessions import TokenDenylist
from gateway.accounts.throttle import IpThrottle, LoginGuard
from gateway.accounts.tokens import TokenIssuer
from gateway.backends.registry import Router
from gateway.config import Config
from gateway.credits.balances import CreditBook
from gateway.http.client_ip import ClientIp
from gateway.idempotency.store import IdempotencyStore
from gateway.jobs.runner import JobRunner
from gateway.keys.cache import KeyCache
from gateway.limits.admission import Admission
from gateway.metrics import Metrics
from gateway.redis.layout import RedisLayout
from gateway.usage.flusher import UsageFlusher
from gateway.webhooks.signing import SecretDeriver

__all__ = ["CONFIG", "SERVICES", "Services"]


@dataclass(slots=True)
class Services:
    config: Config
    pool: Any
    redis: Redis
    layout: RedisLayout
    keys: KeyCache
    admission: Admission
    flusher: UsageFlusher
    router: Router
    tokens: TokenIssuer
    passwords: PasswordHasher
    ip_throttle: IpThrottle
    #: Access tokens logged out before they expire.
    denylist: TokenDenylist
    login_guard: LoginGuard
    client_ip: ClientIp
    metrics: Metrics
    #: Idempotency keys and the answers they stand for.
    idempotency: IdempotencyStore
    #: Derives users' webhook secrets from the server key.
    webhook_secrets: SecretDeriver
    #: Users' credit balances (reading them; operators' changes).
    credits: CreditBook
    #: Wall-clock seconds since the epoch (injected so tests can pin it).
    wall_clock: Callable[[], float]
    #: The job workers (and the queue jobs are submitted to).
    jobs: JobRunner | None = None
    #: Sends password-reset links (``email.smtp_url``); None: links are handed over only.
    mailer: Mailer | None = None
    #: Set when the server starts draining (SIGTERM): /readyz answers 503 from then on.
    draining: bool = False


CONFIG = web.AppKey("config", Config)
SERVICES = web.AppKey("services", Services)
