"""Calling an upstream safely: a deadline, a concurrency cap, retries, a circuit breaker.

:class:`GuardedBackend` wraps one :class:`ImageBackend` and promises:

* **Deadline** — the whole call, retries included, ends within the backend's
  ``timeout_seconds`` (:class:`UpstreamTimeout` past it).
* **Concurrency cap** — at most ``max_concurrency`` calls in flight; up to ``max_queue``
  more wait for a slot; past that the call is refused at once with
  :class:`ServiceUnavailable` and ``Retry-After`` (protects GPU servers and the gateway).
* **Retries** — only when nothing was produced and trying again is safe: connection
  errors and upstream 429/502/503 (``UpstreamError(retryable=True)``), after a jittered,
  doubling backoff, honouring an upstream ``Retry-After`` when it fits the deadline.
* **Circuit breaker** — after ``breaker_failures`` consecutive failures the backend is
  skipped at once (:class:`BackendUnavailable`) for ``breaker_reset_seconds``; then one
  probe call is let through: success closes the breaker, failure opens it again. Only
  the upstream's faults count: a refusal of the request itself
  (:class:`~gateway.errors.UpstreamRefused`, e.g. a content-policy 400) shows the
  upstream is healthy, so one customer's refused prompts never pause everyone's calls.
* **Fan-out** — ``n`` above what one upstream call may return
  (:meth:`ImageBackend.images_per_call`) is split into parallel calls, each with its
  own retries; the images of the calls that succeed are delivered (and only they are
  charged).
* **Streams** — :meth:`GuardedBackend.stream` keeps the breaker, the cap and the
  deadline (each event must come before it), checks every image it passes on, and is
  not retried (events may have gone to the client already). Closing it closes the
  upstream call.
* **Images are images** — every image is checked
  (:func:`~gateway.media.inspect.inspect_image`: container structure, checksums,
  dimensions; no pixel decoding) before it is delivered, so before it is charged.
  Malformed ones are dropped and logged; when none is left the call is an
  :class:`UpstreamError`, which counts against the breaker like any upstream fault.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from gateway.backends.base import GeneratedImage, ImageBackend, ImageEvent, ImageRequest
from gateway.config import ResilienceConfig
from gateway.deadline import Deadline
from gateway.errors import (
    GatewayError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamRefused,
    UpstreamTimeout,
)
from gateway.media.encoded import inspect_generated, walked_in_place
from gateway.media.inspect import MalformedImage

__all__ = ["BackendUnavailable", "BreakerState", "GuardedBackend"]

log = logging.getLogger("gateway.backends")

#: Seeds run from 0 to 2**63 - 1; a fanned-out call's seed wraps within that range.
_SEED_RANGE = 2**63
#: Calls whose images hold more pixels than this are checked in a worker thread.
_INLINE_PIXELS = 512 * 512


class BackendUnavailable(ServiceUnavailable):
    """This backend cannot take the call now (breaker open, or its queue is full)."""


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class GuardedBackend:
    def __init__(
        self,
        backend: ImageBackend,
        settings: ResilienceConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self._settings = settings
        self._clock = clock
        cap = settings.max_concurrency
        self._slots = asyncio.Semaphore(cap) if cap else None
        self._waiting = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = BreakerState.CLOSED
        #: The state last published as a metric (set by the caller that publishes it).
        self.reported_state: BreakerState | None = None

    # -- the breaker -----------------------------------------------------------

    def _admit_through_breaker(self) -> bool:
        """True if this call is the half-open probe."""
        if self.state is BreakerState.CLOSED:
            return False
        reset = self._settings.breaker_reset_seconds
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= reset:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        left = max(1, round(reset - (self._clock() - self._opened_at)))
        raise BackendUnavailable(
            "The image backend is failing; calls are paused.",
            headers={"Retry-After": str(left)},
        )

    def _record(self, ok: bool) -> None:
        if ok:
            self._failures = 0
            self.state = BreakerState.CLOSED
            return
        self._failures += 1
        limit = self._settings.breaker_failures
        if self.state is BreakerState.HALF_OPEN or (limit and self._failures >= limit):
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()

    # -- a call ----------------------------------------------------------------

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        probe = self._admit_through_breaker()
        try:
            deadline = self._clock() + self.backend.timeout_seconds
            per_call = self.backend.images_per_call(request)
            if per_call is not None and request.n > per_call:
                images = await self._fan_out(request, per_call, deadline)
            else:
                images = await self._call(request, deadline)
            if images:
                images = await self._well_formed(request, images)
        except BackendUnavailable:
            raise
        except UpstreamRefused:
            self._record(ok=True)  # the upstream answered: healthy, the request was not
            raise
        except GatewayError:
            self._record(ok=False)
            raise
        else:
            self._record(ok=True)
            return images
        finally:
            if probe:
                self._probing = False

    async def stream(self, request: ImageRequest) -> AsyncGenerator[ImageEvent, None]:
        """The backend's events for ``request``, each image checked (see the module)."""
        probe = self._admit_through_breaker()
        deadline = self._clock() + self.backend.timeout_seconds
        acquired = False
        events = self._backend_events(request)
        try:
            if self._slots is not None:
                await self._take_slot(deadline)
                acquired = True
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    raise UpstreamTimeout()
                try:
                    async with asyncio.timeout(left):
                        event = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamTimeout() from None
                try:
                    event.image.media_type = inspect_generated(event.image).media_type
                except MalformedImage as exc:
                    log.warning("backend %s: a streamed image is malformed: %s", self.name, exc)
                    raise UpstreamError("The image backend sent a malformed image.") from None
                yield event
        except BackendUnavailable:
            raise
        except UpstreamRefused:
            self._record(ok=True)
            raise
        except GatewayError:
            self._record(ok=False)
            raise
        except Exception as exc:
            self._record(ok=False)
            raise UpstreamError(f"The image backend failed ({type(exc).__name__}).") from exc
        else:
            self._record(ok=True)
        finally:
            await events.aclose()  # stops the upstream call (the client may have left)
            if acquired:
                assert self._slots is not None
                self._slots.release()
            if probe:
                self._probing = False

    async def _backend_events(self, request: ImageRequest) -> AsyncGenerator[ImageEvent, None]:
        """The backend's stream; ``n`` above what one call may return is asked for in
        calls one after the other (seeds as :meth:`_fan_out` gives them), numbered on."""
        per_call = self.backend.images_per_call(request)
        if per_call is None or request.n <= per_call:
            per_call = request.n
        for first in range(0, request.n, per_call):
            part = request
            if per_call < request.n:
                seed = request.seed
                if seed is not None:
                    seed = (seed + first) % _SEED_RANGE
                part = dataclasses.replace(request, n=min(per_call, request.n - first), seed=seed)
            events = self.backend.stream(part)
            try:  # closed at once, not when collected: that stops the upstream call
                async for event in events:
                    yield dataclasses.replace(event, index=first + event.index) if first else event
            finally:
                await events.aclose()

    def _call(self, request: ImageRequest, deadline: float) -> Awaitable[list[GeneratedImage]]:
        if self._slots is None:  # no cap: one coroutine less on every call
            return self._with_retries(request, deadline)
        return self._within_slot(request, deadline)

    async def _fan_out(
        self, request: ImageRequest, per_call: int, deadline: float
    ) -> list[GeneratedImage]:
        """``request`` as parallel calls of at most ``per_call`` images each.

        Each call gets its own seed (the request's plus the number of images before it),
        so a seeded request does not get the same image ``n`` times. Returns the images
        of the calls that succeeded, in order; raises when none did (a refusal first: it
        is the request's own fault, whatever the other calls met).
        """
        calls = []
        for first in range(0, request.n, per_call):
            seed = request.seed
            if seed is not None:
                seed = (seed + first) % _SEED_RANGE
            part = dataclasses.replace(request, n=min(per_call, request.n - first), seed=seed)
            calls.append(self._call(part, deadline))
        results = await asyncio.gather(*calls, return_exceptions=True)
        images: list[GeneratedImage] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
            else:
                images += result
        if images:
            return images[: request.n]
        for error in errors:
            if isinstance(error, UpstreamRefused):
                raise error
        for error in errors:
            if not isinstance(error, Exception):  # cancelled: that wins
                raise error
        raise errors[0]

    async def _well_formed(
        self, request: ImageRequest, images: list[GeneratedImage]
    ) -> list[GeneratedImage]:
        """The images that are well-formed; :class:`UpstreamError` if none is."""
        if all(walked_in_place(image) for image in images) or (
            request.width * request.height * len(images) <= _INLINE_PIXELS
        ):
            faults = _inspect_all(images)
        else:  # decoding base64 and checksums of large images: off the event loop
            faults = await asyncio.to_thread(_inspect_all, images)
        if not any(faults):
            return images
        log.warning(
            "backend %s: dropped %d of %d images as malformed: %s",
            self.name,
            sum(1 for fault in faults if fault),
            len(images),
            "; ".join(sorted({fault for fault in faults if fault})),
        )
        kept = [image for image, fault in zip(images, faults, strict=True) if not fault]
        if not kept:
            raise UpstreamError("The image backend sent a malformed image.")
        return kept

    async def _within_slot(self, request: ImageRequest, deadline: float) -> list[GeneratedImage]:
        await self._take_slot(deadline)
        try:
            return await self._with_retries(request, deadline)
        finally:
            assert self._slots is not None
            self._slots.release()

    async def _take_slot(self, deadline: float) -> None:
        """A slot of the concurrency cap, waiting up to ``deadline`` in the queue."""
        assert self._slots is not None
        if self._slots.locked() and self._waiting >= self._settings.max_queue:
            raise BackendUnavailable(
                "The image backend is at capacity. Please retry shortly.",
                headers={"Retry-After": "1"},
            )
        self._waiting += 1
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamTimeout("No backend slot became free in time.") from None
        finally:
            self._waiting -= 1

    async def _with_retries(self, request: ImageRequest, deadline: float) -> list[GeneratedImage]:
        backoff = self._settings.retry_backoff_seconds
        attempt = 0
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise UpstreamTimeout()
            timer = Deadline(left)
            try:
                return await self.backend.generate(request)
            except asyncio.CancelledError:
                if timer.expired():
                    raise UpstreamTimeout() from None
                raise
            except TimeoutError:
                raise UpstreamTimeout() from None
            except UpstreamError as exc:
                timer.cancel()  # before any wait for a retry
                if not exc.retryable or attempt >= self._settings.retries:
                    raise
                wait = backoff * (2**attempt) * random.uniform(0.5, 1.5)
                if exc.retry_after is not None:
                    wait = max(wait, exc.retry_after)
                if self._clock() + wait >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(wait)
            except GatewayError:
                raise
            except Exception as exc:
                raise UpstreamError(f"The image backend failed ({type(exc).__name__}).") from exc
            finally:
                timer.cancel()


def _inspect_all(images: list[GeneratedImage]) -> list[str]:
    """For each image, why it is malformed (``""`` if it is not); sets its media type."""
    faults = []
    for image in images:
        try:
            image.media_type = inspect_generated(image).media_type
        except MalformedImage as exc:
            faults.append(str(exc))
        else:
            faults.append("")
    return faults
