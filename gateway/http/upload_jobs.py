"""``Prefer: respond-async`` on ``POST /v1/images/edits`` and ``/v1/images/variations``."""

from __future__ import annotations

from aiohttp import web

from gateway import errors
from gateway.http.images import GenerationParams
from gateway.keys.cache import KeyRecord
from gateway.services import Services

__all__ = ["submit_upload_job"]


async def submit_upload_job(
    request: web.Request,
    services: Services,
    record: KeyRecord,
    params: GenerationParams,
    now: float,
) -> web.Response:
    """Not yet: the uploaded images would have to be kept for the worker."""
    raise errors.InvalidRequest(
        "Edits and variations cannot run as jobs yet; leave out 'Prefer: respond-async'.",
        param="Prefer",
    )
