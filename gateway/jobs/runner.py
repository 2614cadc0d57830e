"""The workers: every gateway process (and ``gateway worker``) works jobs off the queue.

Up to ``jobs.concurrency`` jobs run at once per process; each backend's own
``max_concurrency`` still holds (:class:`~gateway.backends.resilience.GuardedBackend`),
and each call keeps the backend's deadline. A running job's row gets a heartbeat every
third of the visibility timeout; an entry whose process went quiet is claimed by another
process (XAUTOCLAIM) and, if its heartbeat is stale too, run again, up to
``jobs.max_attempts`` runs. The charge is settled once (:mod:`gateway.jobs.settlement`).

A cancelled job's id is published on a channel; the process running it cancels the task.
The sweeper (every ``jobs.sweep_interval_seconds``, in every process) fails jobs queued
past ``jobs.queue_timeout_seconds``, settles jobs whose process died before settling, and
updates the queue gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from gateway import errors
from gateway.backends.base import GeneratedImage, ImageRequest, parse_size
from gateway.backends.registry import Router
from gateway.config import JobsConfig
from gateway.db.pool import connection
from gateway.egress.client import EgressClient
from gateway.jobs import store
from gateway.jobs.queue import JobQueue
from gateway.jobs.settlement import Settlement
from gateway.jobs.store import JobRow
from gateway.metrics import Metrics
from gateway.storage import Storage
from gateway.tasks import raise_if_cancelled

__all__ = ["JobRunner", "StoredRequest", "StoredResult"]

log = logging.getLogger(__name__)


class StoredRequest(msgspec.Struct):
    """A job's request as kept in Postgres (never a credential)."""

    prompt: str
    n: int
    size: str
    seed: int | None = None
    negative_prompt: str | None = None
    response_format: str = "b64_json"
    # OpenAI's parameters (checked against the backend's capabilities at submission).
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    user: str | None = None


class StoredImage(msgspec.Struct, omit_defaults=True):
    """An image of a job's result: in the object store (``file_id``, whose links are
    signed when the job is read), or inline (``b64_json``)."""

    revised_prompt: str | None
    file_id: str | None = None
    b64_json: str | None = None


class StoredResult(msgspec.Struct):
    backend: str
    data: list[StoredImage]


_encode = msgspec.json.Encoder().encode
_decode_request = msgspec.json.Decoder(StoredRequest).decode


# The call that makes the images, shared with the synchronous path; passed in, so that
# this package does not depend on the HTTP edge.
CallBackends = Callable[[tuple[Any, ...], ImageRequest, Metrics], Any]


class JobRunner:
    def __init__(
        self,
        *,
        config: JobsConfig,
        namespace: str,
        pool: Any,
        redis: Redis,
        queue: JobQueue,
        router: Router,
        settlement: Settlement,
        metrics: Metrics,
        call_backends: CallBackends,
        storage: Storage | None,
        cancel_channel: str,
        wall_clock: Callable[[], float],
    ) -> None:
        self._config = config
        #: The jobs this runner works: those submitted under this Redis namespace.
        self.namespace = namespace
        self._pool = pool
        self._redis = redis
        self.queue = queue
        self._router = router
        self.settlement = settlement
        self._metrics = metrics
        self._call_backends = call_backends
        self._storage = storage
        self._channel = cancel_channel
        self._clock = wall_clock
        self.consumer = f"c-{secrets.token_hex(6)}"
        #: Job id -> the task running it in this process.
        self.running: dict[str, asyncio.Task[None]] = {}
        #: The client webhooks are sent with (set by the wiring; URLs are checked with it).
        self.webhook_egress: EgressClient | None = None
        self._cancelled: set[str] = set()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Make sure the queue exists (rebuilding it if Redis lost it), then start the
        background loops (the workers only if ``jobs.work``)."""
        await self.queue.ensure_group()
        loops = [self._listen_for_cancels(), self._sweep_forever()]
        if self._config.work:
            loops += [self._work_forever(), self._heartbeat_forever()]
        self._tasks = [asyncio.create_task(loop) for loop in loops]

    async def close(self) -> None:
        """Stop taking jobs and stop the running ones: their rows stay ``running`` and
        another process takes them over after the visibility timeout."""
        tasks = [*self._tasks, *self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def publish_cancel(self, job_id: str) -> None:
        """Tell every process to stop running ``job_id`` (cancelled by its owner)."""
        await self._redis.publish(self._channel, job_id)

    # -- working ----------------------------------------------------------------------

    async def _work_forever(self) -> None:
        config = self._config
        visibility_ms = int(config.visibility_timeout_seconds * 1000)
        next_reclaim = 0.0
        backoff = 0.1
        while True:
            while len(self.running) >= config.concurrency:
                self._room.clear()
                await self._room.wait()
            free = config.concurrency - len(self.running)
            try:
                entries: list[tuple[str, str]] = []
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + config.visibility_timeout_seconds / 4
                    entries = await self.queue.reclaim(self.consumer, visibility_ms, free)
                if not entries:
                    entries = await self.queue.read(self.consumer, free, block_ms=1000)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                log.warning("job queue unreachable (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for entry_id, job_id in entries:
                if job_id in self.running:  # a duplicate entry of a job running here
                    continue
                task = asyncio.create_task(self._handle(entry_id, job_id))
                self.running[job_id] = task
                task.add_done_callback(functools.partial(self._task_done, job_id))

    def _task_done(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(job_id, None)
        self._cancelled.discard(job_id)
        self._room.set()

    async def _handle(self, entry_id: str, job_id: str) -> None:
        config = self._config
        now = self._clock()
        try:
            async with connection(self._pool) as conn:
                verdict, job = await store.claim_job(
                    conn,
                    job_id,
                    now=now,
                    stale_before=now - config.visibility_timeout_seconds,
                    queued_since=now - config.queue_timeout_seconds,
                    max_attempts=config.max_attempts,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not claim job %s (%s); it stays queued", job_id, exc)
            return
        if verdict == "skip":
            return
        if verdict == "ended" and job is not None:
            self._ended(job)
            await self.settlement.settle_quietly(job)
        if verdict == "run" and job is not None:
            await self._run(job)
        with contextlib.suppress(Exception):
            await self.queue.ack(entry_id)

    async def _run(self, job: JobRow) -> None:
        metrics = self._metrics
        stored = _decode_request(job.request)
        waited = job.started_at.timestamp() - job.created_at.timestamp() if job.started_at else 0
        if job.attempts == 1:
            metrics.labelled(metrics.job_queued_seconds).observe(max(0.0, waited))
        metrics.labelled(metrics.job_attempts).inc()
        started = time.perf_counter()
        ended: JobRow | None = None
        try:
            routed = self._router.for_model(job.model)
            dims = parse_size(stored.size)
            if routed is None or dims is None:
                raise errors.ModelNotFound(f"The model '{job.model}' is no longer served.")
            request = ImageRequest(
                prompt=stored.prompt,
                n=stored.n,
                width=dims[0],
                height=dims[1],
                model=job.model,
                seed=stored.seed,
                negative_prompt=stored.negative_prompt,
                request_id=job.id,
                quality=stored.quality,
                style=stored.style,
                background=stored.background,
                output_format=stored.output_format,
                output_compression=stored.output_compression,
                moderation=stored.moderation,
                user=stored.user,
            )
            backend_name, images = await self._call_backends(routed[1], request, metrics)
            delivered = images[: stored.n]
            if not delivered:
                raise errors.UpstreamError("The image backend returned no images.")
            result = StoredResult(
                backend=backend_name, data=await self._keep(delivered, stored.response_format)
            )
            async with connection(self._pool) as conn:
                ended = await store.finish_job(
                    conn,
                    job.id,
                    job.attempts,
                    result=_encode(result).decode(),
                    delivered=len(delivered),
                    now=self._clock(),
                )
        except asyncio.CancelledError:
            if job.id not in self._cancelled:
                raise  # shutting down: the job is taken over after the visibility timeout
            return  # cancelled by its owner, who settled it
        except errors.GatewayError as exc:
            async with connection(self._pool) as conn:
                ended = await store.fail_job(
                    conn, job.id, exc.code, exc.message, now=self._clock(), attempt=job.attempts
                )
        finally:
            metrics.labelled(metrics.job_running_seconds).observe(time.perf_counter() - started)
        if ended is not None:
            self._ended(ended)
            await self.settlement.settle_quietly(ended)

    async def _keep(self, images: list[GeneratedImage], response_format: str) -> list[StoredImage]:
        """The images as the job keeps them: stored (``url``), or inline. Raises
        :class:`~gateway.errors.StorageUnavailable` when the store fails."""
        if response_format != "url" or self._storage is None:
            return [StoredImage(image.revised_prompt, b64_json=image.b64()) for image in images]
        store = self._storage.store
        saved = await asyncio.gather(*(store.put(image.data, image.media_type) for image in images))
        return [
            StoredImage(image.revised_prompt, file_id=info.file_id)
            for image, info in zip(images, saved, strict=True)
        ]

    def _ended(self, job: JobRow) -> None:
        self._metrics.labelled(self._metrics.jobs, job.status).inc()

    # -- background loops ---------------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        interval = self._config.visibility_timeout_seconds / 3
        while True:
            await asyncio.sleep(interval)
            if not self.running:
                continue
            try:
                async with connection(self._pool) as conn:
                    await store.heartbeat(conn, list(self.running), now=self._clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job heartbeat failed (%s)", exc)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.sweep_interval_seconds)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                log.warning("job sweep failed (%s)", exc)

    async def sweep(self) -> None:
        """Fail jobs queued too long, settle jobs left unsettled, update the gauges."""
        config = self._config
        now = self._clock()
        async with connection(self._pool) as conn:
            timed_out = await store.stale_queued(
                conn, self.namespace, queued_since=now - config.queue_timeout_seconds, now=now
            )
            left = await store.unsettled(
                conn, self.namespace, ended_before=now - config.sweep_interval_seconds
            )
        for job in timed_out:
            self._ended(job)
        for job in [*timed_out, *left]:
            await self.settlement.settle(job)
        self._metrics.labelled(self._metrics.job_queue_depth).set(await self.queue.depth())

    async def _listen_for_cancels(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    backoff = 0.1
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        raise_if_cancelled()
                        if message is not None and message.get("type") == "message":
                            self._cancel_local(message["data"].decode("ascii", "replace"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                log.warning("job cancel channel lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _cancel_local(self, job_id: str) -> None:
        task = self.running.get(job_id)
        if task is not None:
            self._cancelled.add(job_id)
            task.cancel()
