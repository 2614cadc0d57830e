"""``Prefer: respond-async`` on ``POST /v1/images/edits`` and ``/v1/images/variations``.

The uploaded images must outlive the request: the worker that runs the job may be
another process, minutes later. They are put in the object store (:mod:`gateway.storage`,
which every process shares) under fresh unguessable ids that no link is ever signed
for, and the job's request refers to them (:class:`~gateway.jobs.runner.StoredInput`);
the worker reads them back and deletes them when the job ends. A job that never ends
there (cancelled while queued) leaves them to the store's sweeper.

Admission is a generation job's: the rate limit and the ``n`` images reserved at once,
then owned by the job (:func:`gateway.http.jobs_api.admit_and_record`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from gateway import errors
from gateway.backends.base import InputImage
from gateway.http.images import GenerationParams, credit_price
from gateway.http.jobs_api import admit_and_record, job_of, runner_of
from gateway.http.middlewares import LOG_FIELDS
from gateway.http.responses import json_response
from gateway.http.validate import refuse_nul
from gateway.jobs.runner import StoredInput, StoredRequest
from gateway.keys.cache import KeyRecord
from gateway.services import Services
from gateway.storage import STORAGE, Storage

__all__ = ["submit_upload_job"]

log = logging.getLogger(__name__)


async def submit_upload_job(
    request: web.Request,
    services: Services,
    record: KeyRecord,
    params: GenerationParams,
    now: float,
    *,
    response_format: str,
) -> web.Response:
    """Keep the uploads, admit and queue the edit or variation; the 202 with the job."""
    runner = runner_of(services)
    storage = request.app[STORAGE]
    image_request = params.request
    # The job's request is kept in Postgres; the other parameters are enums and numbers.
    refuse_nul(image_request.prompt, "prompt")
    refuse_nul(image_request.user, "user")
    request[LOG_FIELDS].update(key_id=record.key_id, user_id=record.user_id, model=params.model)
    kept = await _keep(storage, image_request.images, image_request.mask)
    stored = StoredRequest.of(
        image_request,
        response_format,
        kept[: len(image_request.images)],
        kept[-1] if image_request.mask is not None else None,
    )
    try:
        row = await admit_and_record(
            services,
            runner,
            record,
            params.model,
            stored,
            now,
            backend=params.chain[0].name,
            price=credit_price(services, record, image_request),
        )
    except BaseException:
        await asyncio.shield(_forget(storage, kept))
        raise
    headers = {"Location": f"/v1/images/jobs/{row.id}", "Preference-Applied": "respond-async"}
    return json_response(await job_of(row, storage, request), status=202, headers=headers)


async def _keep(
    storage: Storage, images: tuple[InputImage, ...], mask: InputImage | None
) -> list[StoredInput]:
    """Put the images (then the mask) in the store. Raises the 503
    :class:`~gateway.errors.StorageUnavailable`, having stored nothing for good."""
    uploads = [*images, *([mask] if mask is not None else [])]
    results = await asyncio.gather(
        *(storage.store.put(image.data, image.media_type) for image in uploads),
        return_exceptions=True,
    )
    kept = [
        StoredInput(info.file_id, image.media_type, image.width, image.height, image.filename)
        for image, info in zip(uploads, results, strict=True)
        if not isinstance(info, BaseException)
    ]
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        await _forget(storage, kept)
        log.warning("storing a job's uploaded images failed: %s", failed)
        if isinstance(failed, errors.GatewayError):
            raise failed
        raise errors.StorageUnavailable()
    return kept


async def _forget(storage: Storage, kept: list[StoredInput]) -> None:
    for item in kept:
        with contextlib.suppress(Exception):  # the sweeper deletes what is left
            await storage.store.delete(item.file_id)
