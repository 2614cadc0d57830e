"""``GET /admin/usage/export``: every key's images and credits per UTC day and model,
streamed.

One row per user, key, day, model and backend, as CSV or JSON Lines, written as Postgres
hands them over (a server-side cursor, a thousand rows at a time): a year of a large tenant
never sits in memory. Today's live counts are written through to Postgres first.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from gateway import errors
from gateway.db.pool import connection
from gateway.db.usage import usage_rows_between
from gateway.http.accounts import utc_today
from gateway.http.admin import authorise
from gateway.http.schemas.usage import MAX_DAYS
from gateway.http.validate import query_date

__all__ = ["EXPORT_COLUMNS", "export_usage"]

EXPORT_COLUMNS = (
    "user_id",
    "email",
    "api_key_id",
    "date",
    "model",
    "backend",
    "images",
    "credits",
)
_FORMATS = {"csv": "text/csv", "jsonl": "application/jsonl"}

log = logging.getLogger(__name__)


async def export_usage(request: web.Request) -> web.StreamResponse:
    services = authorise(request)
    start = query_date(request.query.get("start"), "start")
    end = query_date(request.query.get("end"), "end")
    if start is None or end is None:
        name = "start" if start is None else "end"
        raise errors.InvalidRequest(f"'{name}' is required, YYYY-MM-DD.", param=name)
    if end < start:
        raise errors.InvalidRequest("'end' must not be before 'start'.", param="end")
    if (end - start).days + 1 > MAX_DAYS:
        raise errors.InvalidRequest(f"The range may cover at most {MAX_DAYS} days.", param="start")
    form = request.query.get("format", "csv")
    if form not in _FORMATS:
        raise errors.InvalidRequest("'format' must be csv or jsonl.", param="format")
    if start <= utc_today(services) <= end:
        try:
            await services.flusher.flush()
        except Exception as exc:
            raise errors.ServiceUnavailable("Usage could not be brought up to date.") from exc

    return _ExportResponse(services.pool, start, end, form)


class _ExportResponse(web.StreamResponse):
    """Streams the rows when aiohttp prepares it (as ``FileResponse`` does), so the
    middlewares' headers are in before anything is sent. A failure mid-body can only cut
    the body short (the connection is closed): the status line is gone by then."""

    def __init__(self, pool: Any, start: dt.date, end: dt.date, form: str) -> None:
        super().__init__(
            headers={
                "Content-Type": f"{_FORMATS[form]}; charset=utf-8",
                "Content-Disposition": f'attachment; filename="usage-{start}-{end}.{form}"',
            }
        )
        self._pool, self._first_day, self._last_day, self._form = pool, start, end, form

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)
        csv_form = self._form == "csv"
        try:
            if csv_form:
                await self.write(_csv([EXPORT_COLUMNS]))
            async with connection(self._pool) as conn, conn.transaction(readonly=True):
                async for batch in usage_rows_between(conn, self._first_day, self._last_day):
                    rows = [
                        (str(r["user_id"]), r["email"], str(r["api_key_id"]),
                         r["usage_date"].isoformat(), r["model"], r["backend"], r["images"],
                         r["credits"])
                        for r in batch
                    ]  # fmt: skip
                    await self.write(_csv(rows) if csv_form else _jsonl(rows))
        except Exception as exc:
            log.warning("usage export stopped mid-body: %s", exc)
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("the usage export failed mid-body") from None
        await super().write_eof()
        return writer


def _csv(rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _jsonl(rows: Sequence[Sequence[object]]) -> bytes:
    return b"".join(
        orjson.dumps(dict(zip(EXPORT_COLUMNS, row, strict=True))) + b"\n" for row in rows
    )
