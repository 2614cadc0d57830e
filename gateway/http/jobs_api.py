"""``/v1/images/jobs``: submit a generation to run in the background, read, list and
cancel jobs (API key). ``POST /v1/images/generations`` with ``Prefer: respond-async``
submits the same way (:func:`submit_job`).

Submitting admits like a synchronous call (one Redis round trip: the rate limit, and the
``n`` images reserved); the reservation then belongs to the job
(:mod:`gateway.jobs.settlement`).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from gateway import errors
from gateway.db.pool import connection
from gateway.egress.client import EgressError
from gateway.http.api_key_auth import authenticate
from gateway.http.body import decode_body
from gateway.http.idempotency import HEADER, IDEMPOTENCY_TAKEN, idempotent
from gateway.http.images import admit_request, credit_price, parse_generation
from gateway.http.middlewares import LOG_FIELDS, REQUEST_ID
from gateway.http.responses import json_response
from gateway.http.schemas.images import ImageData, ImageUsage
from gateway.http.schemas.jobs import (
    JOB_STATUSES,
    MAX_LIST_LIMIT,
    Job,
    JobError,
    JobList,
    JobRequest,
)
from gateway.jobs import store
from gateway.jobs.runner import JobRunner, StoredImage, StoredRequest, StoredResult
from gateway.jobs.store import JobRow
from gateway.keys.cache import KeyRecord
from gateway.services import SERVICES, Services
from gateway.storage import STORAGE, Storage
from gateway.usage.labels import usage_label
from gateway.webhooks.store import find_nonce

__all__ = [
    "admit_and_record",
    "cancel_job",
    "cancel_users_job",
    "create_job",
    "get_job",
    "job_of",
    "list_jobs",
    "runner_of",
    "submit_job",
]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_result = msgspec.json.Decoder(StoredResult).decode
_decode_metadata = msgspec.json.Decoder(dict[str, str]).decode
DEFAULT_LIST_LIMIT = 20


async def job_of(row: JobRow, storage: Storage | None, request: web.Request | None = None) -> Job:
    """A job as the API shows it, from its row; stored images get fresh signed links
    (for ``request``'s host, unless ``storage.public_base_url`` says otherwise). Without
    a request or a public base URL (a webhook), a job's stored images are left out."""
    job = Job(
        id=row.id,
        object="image.job",
        status=row.status,  # type: ignore[arg-type]  # the table's CHECK keeps it one of them
        created_at=int(row.created_at.timestamp()),
        model=row.model,
        n=row.reserved,
        metadata=_decode_metadata(row.metadata),
    )
    if row.completed_at is not None:
        job.completed_at = int(row.completed_at.timestamp())
    if row.status == "succeeded" and row.result is not None:
        result = _decode_result(row.result)
        try:
            job.data = [await _image_data(image, storage, request) for image in result.data]
        except ValueError:  # no host to link to
            job.data = None
        job.usage = ImageUsage(row.delivered)
    if row.status == "failed":
        job.error = JobError(row.error_code or "job_failed", row.error_message or "")
    return job


async def _image_data(
    image: StoredImage, storage: Storage | None, request: web.Request | None
) -> ImageData:
    if image.file_id is None:
        return ImageData(b64_json=image.b64_json or "", revised_prompt=image.revised_prompt)
    if storage is None:
        raise ValueError("no store")
    link = await storage.links.link(image.file_id, now=storage.clock(), request=request)
    return ImageData(url=link.url, revised_prompt=image.revised_prompt)


def runner_of(services: Services) -> JobRunner:
    if services.jobs is None:  # pragma: no cover - create_app always makes one
        raise errors.ServiceUnavailable("Jobs are not available.")
    return services.jobs


async def create_job(request: web.Request) -> web.StreamResponse:
    if HEADER in request.headers and IDEMPOTENCY_TAKEN not in request:
        return await idempotent(request, create_job)
    return await submit_job(request, preferred=False)


async def submit_job(request: web.Request, *, preferred: bool) -> web.Response:
    """Admit and queue the request's generation; the 202 with the job.

    ``preferred``: it came as ``Prefer: respond-async`` on the synchronous route.
    """
    services: Services = request.app[SERVICES]
    config = services.config
    now = services.wall_clock()
    record = await authenticate(request, services.keys, config.keys.prefix, now)
    body = await decode_body(
        request, JobRequest, config.server, {"most": record.max_images_per_request}
    )
    if body.stream:
        raise errors.InvalidRequest(
            "A job cannot stream: send 'stream': false (or leave it out), or call"
            " POST /v1/images/generations without 'Prefer: respond-async'.",
            param="stream",
        )
    params = parse_generation(body, services, record, request[REQUEST_ID])
    stored = StoredRequest.of(params.request, params.response_format)
    request[LOG_FIELDS].update(key_id=record.key_id, user_id=record.user_id, model=params.model)
    runner = runner_of(services)
    if body.webhook_url is not None:
        await _check_webhook_url(services, runner, record, body.webhook_url)
    row = await admit_and_record(
        services,
        runner,
        record,
        params.model,
        stored,
        now,
        body.metadata,
        body.webhook_url,
        backend=params.chain[0].name,
        price=credit_price(services, record, params.request),
    )
    headers = {"Location": f"/v1/images/jobs/{row.id}"}
    if preferred:
        headers["Preference-Applied"] = "respond-async"
    return json_response(
        await job_of(row, request.app[STORAGE], request), status=202, headers=headers
    )


async def _check_webhook_url(
    services: Services, runner: JobRunner, record: KeyRecord, url: str
) -> None:
    """Before anything is charged: the URL may be sent to, and the user has a secret."""
    config = services.config.webhooks
    schemes = ("https", "http") if config.allow_http else ("https",)
    message = f"'webhook_url' must be an {' or '.join(schemes)} URL the gateway may reach."
    if runner.webhook_egress is None:  # pragma: no cover - create_app always makes one
        raise errors.ServiceUnavailable("Webhooks are not available.")
    try:
        parsed = runner.webhook_egress.check_url(url)
    except EgressError:
        raise errors.InvalidRequest(message, param="webhook_url") from None
    if parsed.scheme not in schemes:
        raise errors.InvalidRequest(message, param="webhook_url")
    async with connection(services.pool) as conn:
        if await find_nonce(conn, record.user_id) is None:
            raise errors.InvalidRequest(
                "Create a webhook secret first (POST /v1/webhooks/secret), to verify the"
                " webhooks with.",
                param="webhook_url",
            )


async def admit_and_record(
    services: Services,
    runner: JobRunner,
    record: KeyRecord,
    model: str,
    stored: StoredRequest,
    now: float,
    metadata: dict[str, str] | None = None,
    webhook_url: str | None = None,
    *,
    backend: str,
    price: int = 0,
) -> JobRow:
    """Admit the job's ``n`` images (and ``n * price`` credits, when the plan has a credit
    limit), counted under ``model`` and ``backend`` (the one planned), record it and queue
    it; the reservation then belongs to the job. Raises the 429s, 402 and 503s of
    admission and of the queue."""
    n = stored.n
    admission = services.admission
    job_id = store.new_job_id()
    decision = await admit_request(
        services,
        record,
        n,
        price=price,
        reference=job_id,
        label=usage_label(model, backend),
    )
    if decision.local:  # Redis is down (redis.on_failure: open): no queue to put it on
        await admission.release(record, decision, n)
        raise errors.ServiceUnavailable("The job queue is unavailable. Please retry shortly.")
    # The reservation now belongs to the job, not to this process's journal (see
    # gateway.jobs.settlement for why in this order).
    admission.delivered(decision)
    try:
        async with connection(services.pool) as conn:
            row = await store.insert_job(
                conn,
                job_id=job_id,
                queue=runner.namespace,
                user_id=record.user_id,
                api_key_id=record.key_id,
                model=model,
                request=_encode(stored).decode(),
                metadata=_encode(metadata or {}).decode(),
                webhook_url=webhook_url,
                reserved=n,
                charge_day=decision.day,
                charge_member=decision.member,
                charge_price=decision.price,
                charge_purchased=decision.taken_purchased,
                charge_month=decision.month,
                charge_backend=backend,
                now=now,
            )
    except BaseException:
        await admission.release(record, decision, n)
        raise
    try:
        await runner.queue.enqueue(job_id)
    except Exception:
        async with connection(services.pool) as conn:
            failed = await store.fail_job(
                conn, job_id, "queue_unavailable", "The job could not be queued.", now=now
            )
        if failed is not None:
            await runner.settlement.settle_quietly(failed)
            runner.ended(failed)
        raise errors.ServiceUnavailable(
            "The job queue is unavailable. Please retry shortly."
        ) from None
    return row


async def get_job(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    record = await authenticate(
        request, services.keys, services.config.keys.prefix, services.wall_clock()
    )
    async with connection(services.pool) as conn:
        row = await store.find_job(conn, request.match_info["id"], record.user_id)
    if row is None:
        raise errors.NotFound("No such job.")
    return json_response(await job_of(row, request.app[STORAGE], request))


async def cancel_job(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    record = await authenticate(
        request, services.keys, services.config.keys.prefix, services.wall_clock()
    )
    row = await cancel_users_job(services, request.match_info["id"], record.user_id)
    return json_response(await job_of(row, request.app[STORAGE], request))


async def cancel_users_job(services: Services, job_id: str, user_id: Any) -> JobRow:
    """Cancel the user's job if it has not ended (its reservation is given back, every
    process stops running it); the job as it is now. A job that ended already is
    unchanged. Raises the 404 for a job that is not the user's."""
    runner = runner_of(services)
    async with connection(services.pool) as conn:
        row = await store.cancel_job(conn, job_id, user_id, now=services.wall_clock())
        if row is None:
            row = await store.find_job(conn, job_id, user_id)
            if row is None:
                raise errors.NotFound("No such job.")
            return row  # finished already: unchanged
    await runner.settlement.settle_quietly(row)
    runner.ended(row)
    try:
        await runner.publish_cancel(job_id)
    except Exception as exc:  # the run's result is not recorded anyway: the row is canceled
        log.warning("could not tell the processes that job %s is cancelled (%s)", job_id, exc)
    return row


async def list_jobs(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    record = await authenticate(
        request, services.keys, services.config.keys.prefix, services.wall_clock()
    )
    query = request.query
    status = query.get("status") or None
    if status is not None and status not in JOB_STATUSES:
        raise errors.InvalidRequest(
            f"'status' must be one of: {', '.join(JOB_STATUSES)}.", param="status"
        )
    raw_limit = query.get("limit")
    limit = DEFAULT_LIST_LIMIT
    if raw_limit is not None:
        if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise errors.InvalidRequest(
                f"'limit' must be a whole number from 1 to {MAX_LIST_LIMIT}.", param="limit"
            )
        limit = int(raw_limit)
    after = query.get("after") or None
    async with connection(services.pool) as conn:
        rows = await store.list_jobs(
            conn, record.user_id, status=status, after=after, limit=limit + 1
        )
    if rows is None:
        raise errors.InvalidRequest("'after' must be the id of one of your jobs.", param="after")
    return json_response(
        JobList(
            object="list",
            data=[await job_of(row, request.app[STORAGE], request) for row in rows[:limit]],
            has_more=len(rows) > limit,
        )
    )
