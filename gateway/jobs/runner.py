"""The workers: every gateway process (and ``gateway worker``) works jobs off the queue.

Up to ``jobs.concurrency`` jobs run at once per process; each backend's own
``max_concurrency`` still holds (:class:`~gateway.backends.resilience.GuardedBackend`),
and each call keeps the backend's deadline. A running job's row gets a heartbeat every
third of the visibility timeout; an entry whose process went quiet is claimed by another
process (XAUTOCLAIM) and, if its heartbeat is stale too, run again, up to
``jobs.max_attempts`` runs. The charge is settled once (:mod:`gateway.jobs.settlement`).

A process that stops (SIGTERM) takes no new job; its running jobs get
``jobs.shutdown_grace_seconds`` to finish, then are handed back: the row goes back to
``queued`` (its attempt stays counted) and a new stream entry replaces the old one, so
another process starts it at once instead of after the visibility timeout.

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
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from gateway import errors
from gateway.backends.base import GENERATE, GeneratedImage, ImageRequest, InputImage, parse_size
from gateway.backends.registry import Router
from gateway.config import JobsConfig
from gateway.db.pool import connection
from gateway.egress.client import EgressClient
from gateway.jobs import store
from gateway.jobs.queue import JobQueue
from gateway.jobs.settlement import Settlement
from gateway.jobs.store import JobRow
from gateway.metrics import Metrics
from gateway.redis.channels import publish, subscribed
from gateway.storage import Storage
from gateway.tasks import raise_if_cancelled

__all__ = ["JobRunner", "StoredInput", "StoredRequest", "StoredResult", "load_inputs"]

log = logging.getLogger(__name__)


class StoredInput(msgspec.Struct):
    """An uploaded image of an edit or a variation, kept in the object store until the
    job ends (``file_id``), checked when it was uploaded."""

    file_id: str
    media_type: str
    width: int
    height: int
    filename: str


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
    input_fidelity: str | None = None
    user: str | None = None
    #: ``generate``, ``edit`` or ``variation`` (:class:`ImageRequest`'s operation).
    operation: str = GENERATE
    #: An edit's or a variation's uploaded images, and an edit's mask.
    images: list[StoredInput] = msgspec.field(default_factory=list)
    mask: StoredInput | None = None

    @classmethod
    def of(
        cls,
        request: ImageRequest,
        response_format: str,
        images: Sequence[StoredInput] = (),
        mask: StoredInput | None = None,
    ) -> StoredRequest:
        """``request`` as a job keeps it, its uploads kept as ``images`` and ``mask``."""
        return cls(
            prompt=request.prompt,
            n=request.n,
            size=f"{request.width}x{request.height}",
            seed=request.seed,
            negative_prompt=request.negative_prompt,
            response_format=response_format,
            operation=request.operation,
            images=list(images),
            mask=mask,
            **{name: getattr(request, name) for name in _PARAMETERS},
        )

    def image_request(
        self,
        model: str,
        width: int,
        height: int,
        request_id: str,
        images: tuple[InputImage, ...] = (),
        mask: InputImage | None = None,
    ) -> ImageRequest:
        """The request to make for the job, with its uploads read back (:func:`load_inputs`)."""
        return ImageRequest(
            prompt=self.prompt,
            n=self.n,
            width=width,
            height=height,
            model=model,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
            request_id=request_id,
            operation=self.operation,
            images=images,
            mask=mask,
            **{name: getattr(self, name) for name in _PARAMETERS},
        )


#: OpenAI's parameters, kept under :class:`ImageRequest`'s names (a job does not stream).
_PARAMETERS = (
    "quality",
    "style",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "input_fidelity",
    "user",
)


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


async def load_inputs(
    storage: Storage | None, stored: StoredRequest
) -> tuple[tuple[InputImage, ...], InputImage | None]:
    """A job's uploaded images (and mask), read back from the object store.

    Raises :class:`~gateway.errors.StorageUnavailable` when they cannot be read.
    """
    if not stored.images:
        return (), None
    if storage is None:
        raise errors.StorageUnavailable("The job's images are not available.")

    async def load(item: StoredInput) -> InputImage:
        try:
            body = await storage.store.open(item.file_id)
        except errors.NotFound:
            raise errors.StorageUnavailable("The job's images are no longer stored.") from None
        try:
            data = b"".join([chunk async for chunk in body.chunks()])
        finally:
            body.close()
        return InputImage(data, item.media_type, item.width, item.height, item.filename)

    images = tuple([await load(item) for item in stored.images])
    mask = await load(stored.mask) if stored.mask is not None else None
    return images, mask


# The call that makes the images, shared with the synchronous path; passed in, so that
# this package does not depend on the HTTP edge.
CallBackends = Callable[[tuple[Any, ...], ImageRequest, Metrics], Any]

#: How long one read of the stream waits for a new entry.
_READ_BLOCK_MS = 1000


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
        #: Wakes this process's webhook sender (set by the wiring).
        self.webhook_due: Callable[[], None] | None = None
        self._cancelled: set[str] = set()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._worker: asyncio.Task[None] | None = None
        #: Set once the process stops: no new job is taken, running ones are handed back.
        self._stopping = False
        self._stop_deadline = 0.0

    # -- life cycle -------------------------------------------------------------------

    def use_router(self, router: Router) -> None:
        """Route the jobs that start from now on over ``router`` (a config reload)."""
        self._router = router

    async def start(self) -> None:
        """Make sure the queue exists (rebuilding it if Redis lost it), then start the
        background loops (the workers only if ``jobs.work``)."""
        await self.queue.ensure_group()
        loops = [self._listen_for_cancels(), self._sweep_forever()]
        if self._config.work:
            loops.append(self._heartbeat_forever())
            self._worker = asyncio.create_task(self._work_forever())
        self._tasks = [asyncio.create_task(loop) for loop in loops]

    def begin_stop(self) -> None:
        """Take no new job from now on; the running ones have ``jobs.shutdown_grace_seconds``
        from now to finish (see :meth:`close`)."""
        if not self._stopping:
            self._stopping = True
            self._stop_deadline = time.monotonic() + self._config.shutdown_grace_seconds
            self._room.set()

    async def close(self) -> None:
        """Stop: no new job is taken; the running ones finish within the grace, or are
        handed back to the queue for another process (their upstream calls cancelled)."""
        self.begin_stop()
        if self._worker is not None:  # it leaves after its current read (up to 1 s)
            done, _ = await asyncio.wait([self._worker], timeout=self._read_bound())
            if not done:
                self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        running = list(self.running.values())
        if running:
            left = self._stop_deadline - time.monotonic()
            if left > 0:
                await asyncio.wait(running, timeout=left)
            for task in running:
                task.cancel()  # handed back (see _run), unless done meanwhile
            await asyncio.gather(*running, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _read_bound(self) -> float:
        return _READ_BLOCK_MS / 1000 + self.queue.timeout + 1

    async def publish_cancel(self, job_id: str) -> None:
        """Tell every process to stop running ``job_id`` (cancelled by its owner)."""
        await publish(self._redis, self._channel, job_id)

    # -- working ----------------------------------------------------------------------

    async def _work_forever(self) -> None:
        config = self._config
        visibility_ms = int(config.visibility_timeout_seconds * 1000)
        next_reclaim = 0.0
        backoff = 0.1
        while not self._stopping:
            while len(self.running) >= config.concurrency and not self._stopping:
                self._room.clear()
                await self._room.wait()
            if self._stopping:
                return
            free = config.concurrency - len(self.running)
            try:
                entries: list[tuple[str, str]] = []
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + config.visibility_timeout_seconds / 4
                    entries = await self.queue.reclaim(self.consumer, visibility_ms, free)
                if not entries:
                    entries = await self.queue.read(self.consumer, free, block_ms=_READ_BLOCK_MS)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                log.warning("job queue unreachable (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._stopping:  # read while stopping: back to the queue, for another
                for entry_id, job_id in entries:
                    await self._requeue_entry(entry_id, job_id)
                return
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
            await self.settlement.settle_quietly(job)
            self.ended(job)
        if verdict == "run" and job is not None and not await self._run(job):
            await self._hand_back(entry_id, job)
            return
        with contextlib.suppress(Exception):
            await self.queue.ack(entry_id)

    async def _hand_back(self, entry_id: str, job: JobRow) -> None:
        """Put a job this process stopped running back on the queue, for another process
        to start at once; its attempt stays counted."""
        try:
            async with connection(self._pool) as conn:
                requeued = await store.requeue_job(conn, job.id, job.attempts)
            if not requeued:  # no longer this attempt's (cancelled, ended, taken over)
                await self.queue.ack(entry_id)
                return
            await self.queue.requeue(entry_id, job.id)
            log.info("job %s handed back to the queue (attempt %d)", job.id, job.attempts)
        except Exception as exc:
            log.warning(
                "could not hand job %s back (%s); another process takes it over after"
                " the visibility timeout",
                job.id,
                exc,
            )

    async def _requeue_entry(self, entry_id: str, job_id: str) -> None:
        try:
            await self.queue.requeue(entry_id, job_id)
        except Exception as exc:
            log.warning("could not requeue job %s (%s)", job_id, exc)

    async def _run(self, job: JobRow) -> bool:
        """Run the job's attempt; False if it was stopped for the process to stop (the
        job is not finished: hand it back)."""
        metrics = self._metrics
        stored = _decode_request(job.request)
        waited = job.started_at.timestamp() - job.created_at.timestamp() if job.started_at else 0
        if job.attempts == 1:
            metrics.labelled(metrics.job_queued_seconds).observe(max(0.0, waited))
        metrics.labelled(metrics.job_attempts).inc()
        started = time.perf_counter()
        ended: JobRow | None = None
        backend_name = ""
        try:
            routed = self._router.for_model(job.model)
            dims = parse_size(stored.size)
            if routed is None or dims is None:
                raise errors.ModelNotFound(f"The model '{job.model}' is no longer served.")
            inputs, mask = await load_inputs(self._storage, stored)
            request = stored.image_request(job.model, *dims, job.id, inputs, mask)
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
            if job.id in self._cancelled:
                return True  # cancelled by its owner, who settled it
            if not self._stopping:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # handled: the hand-back still talks to Postgres and Redis
            return False
        except errors.GatewayError as exc:
            async with connection(self._pool) as conn:
                ended = await store.fail_job(
                    conn, job.id, exc.code, exc.message, now=self._clock(), attempt=job.attempts
                )
        finally:
            metrics.labelled(metrics.job_running_seconds).observe(time.perf_counter() - started)
        if ended is not None:
            if ended.status == "succeeded":
                await self.settlement.attribute(ended, backend_name)
            await self.settlement.settle_quietly(ended)
            self.ended(ended)
            await self._forget_inputs(stored)
        return True

    async def _forget_inputs(self, stored: StoredRequest) -> None:
        """Delete an ended job's uploaded images (best effort: the store's sweeper
        deletes what is left after its retention)."""
        inputs = [*stored.images, *([stored.mask] if stored.mask is not None else [])]
        if not inputs or self._storage is None:
            return
        store = self._storage.store
        for item in inputs:
            try:
                await store.delete(item.file_id)
            except Exception as exc:
                log.warning("could not delete a job's uploaded image (%s)", exc)

    async def _keep(self, images: list[GeneratedImage], response_format: str) -> list[StoredImage]:
        """The images as the job keeps them: stored (``url``), or inline. Raises
        :class:`~gateway.errors.StorageUnavailable` when the store fails."""
        if response_format != "url" or self._storage is None:
            return [StoredImage(image.revised_prompt, b64_json=image.b64()) for image in images]
        store = self._storage.store
        # Each image keeps only its bytes before the writes: the upstream's answer is
        # freed instead of being held beside them (as for a synchronous request).
        files = [(image.bytes_only(), image.media_type) for image in images]
        saved = await asyncio.gather(*(store.put(data, media) for data, media in files))
        return [
            StoredImage(image.revised_prompt, file_id=info.file_id)
            for image, info in zip(images, saved, strict=True)
        ]

    def ended(self, job: JobRow) -> None:
        """``job`` reached its terminal status in this process: counted, and its webhook
        (if any) sent at once by this process's sender. Called once its settlement is
        done, which updates the same row: the sender skips rows locked at that moment."""
        self._metrics.labelled(self._metrics.jobs, job.status).inc()
        if job.webhook_url is not None and self.webhook_due is not None:
            self.webhook_due()

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
        """Fail jobs queued too long, settle jobs left unsettled, update the gauges (jobs
        queued and running in the namespace, entries in the stream)."""
        config = self._config
        now = self._clock()
        # One transaction: an idle process's sweep costs Postgres one commit.
        async with connection(self._pool) as conn, conn.transaction():
            timed_out = await store.stale_queued(
                conn, self.namespace, queued_since=now - config.queue_timeout_seconds, now=now
            )
            left = await store.unsettled(
                conn, self.namespace, ended_before=now - config.sweep_interval_seconds
            )
            unfinished = await store.count_unfinished(conn, self.namespace)
        try:
            for job in [*timed_out, *left]:
                await self.settlement.settle(job)
        finally:
            for job in timed_out:
                self.ended(job)
        metrics = self._metrics
        for status, count in unfinished.items():
            metrics.labelled(metrics.jobs_unfinished, status).set(count)
        metrics.labelled(metrics.job_queue_depth).set(await self.queue.depth())

    async def _listen_for_cancels(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with subscribed(self._redis, self._channel) as next_message:
                    backoff = 0.1
                    while True:
                        data = await next_message(1.0)
                        raise_if_cancelled()
                        if data is not None:
                            self._cancel_local(data.decode("ascii", "replace"))
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
