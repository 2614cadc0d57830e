"""The ``image_jobs`` table: every SQL statement about jobs, each taking a connection.

A job's status changes only through the conditional updates here, so a job reaches
exactly one terminal status (``succeeded``, ``failed``, ``canceled``) however many
attempts, cancels and sweeps race for it: the first update wins, the rest match no row.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FINISHED",
    "JobRow",
    "cancel_job",
    "claim_job",
    "count_unfinished",
    "fail_job",
    "find_job",
    "finish_job",
    "heartbeat",
    "insert_job",
    "list_jobs",
    "mark_settled",
    "new_job_id",
    "requeue_job",
    "stale_queued",
    "unfinished_ids",
    "unsettled",
]

FINISHED = ("succeeded", "failed", "canceled")
_ALPHABET = string.ascii_letters + string.digits


def new_job_id() -> str:
    """``job_`` + 22 base62 characters (131 random bits)."""
    return "job_" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as Postgres holds it (``request``, ``metadata`` and ``result`` as JSON text)."""

    id: str
    queue: str
    user_id: Any
    api_key_id: Any
    status: str
    model: str
    request: str
    metadata: str
    result: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    reserved: int
    delivered: int
    charge_day: int
    charge_member: str
    #: Credits per image reserved, how many of them were purchased ones, and the month
    #: they were taken in (0, 0, -1: no credits reserved).
    charge_price: int
    charge_purchased: int
    charge_month: int
    #: The backend planned at admission: the job's images are counted under it (and
    #: its model) until the backend that made them is known.
    charge_backend: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    completed_at: dt.datetime | None
    settled_at: dt.datetime | None
    webhook_url: str | None
    webhook_attempts: int

    @classmethod
    def of(cls, row: Any) -> JobRow:
        return cls(**{name: row[name] for name in cls.__slots__})


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def insert_job(
    conn: Any,
    *,
    job_id: str,
    queue: str,
    user_id: Any,
    api_key_id: Any,
    model: str,
    request: str,
    metadata: str,
    webhook_url: str | None,
    reserved: int,
    charge_day: int,
    charge_member: str,
    now: float,
    charge_price: int = 0,
    charge_purchased: int = 0,
    charge_month: int = -1,
    charge_backend: str = "",
) -> JobRow:
    row = await conn.fetchrow(
        "INSERT INTO image_jobs (id, user_id, api_key_id, model, request, metadata,"
        " webhook_url, reserved, charge_day, charge_member, created_at, queue,"
        " charge_price, charge_purchased, charge_month, charge_backend)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9, $10, $11, $12,"
        " $13, $14, $15, $16)"
        " RETURNING *",
        job_id,
        user_id,
        api_key_id,
        model,
        request,
        metadata,
        webhook_url,
        reserved,
        charge_day,
        charge_member,
        _at(now),
        queue,
        charge_price,
        charge_purchased,
        charge_month,
        charge_backend,
    )
    return JobRow.of(row)


async def find_job(conn: Any, job_id: str, user_id: Any = None) -> JobRow | None:
    """The job, if it exists (and, given ``user_id``, belongs to that user)."""
    row = await conn.fetchrow(
        "SELECT * FROM image_jobs WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)",
        job_id,
        user_id,
    )
    return None if row is None else JobRow.of(row)


async def list_jobs(
    conn: Any, user_id: Any, *, status: str | None, after: str | None, limit: int
) -> list[JobRow] | None:
    """Up to ``limit`` of the user's jobs, newest first, older than ``after``; None if
    ``after`` is not one of the user's jobs."""
    before = None
    if after is not None:
        before = await conn.fetchval(
            "SELECT seq FROM image_jobs WHERE id = $1 AND user_id = $2", after, user_id
        )
        if before is None:
            return None
    rows = await conn.fetch(
        "SELECT * FROM image_jobs WHERE user_id = $1"
        " AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR seq < $3)"
        " ORDER BY seq DESC LIMIT $4",
        user_id,
        status,
        before,
        limit,
    )
    return [JobRow.of(row) for row in rows]


async def claim_job(
    conn: Any,
    job_id: str,
    *,
    now: float,
    stale_before: float,
    queued_since: float,
    max_attempts: int,
) -> tuple[str, JobRow | None]:
    """Decide what a worker that was handed ``job_id`` does with it.

    Returns ``("run", job)`` (the job is now running, its attempt counted), ``("skip",
    None)`` (another live attempt runs it: leave the entry pending), ``("done", None)``
    (finished or unknown: acknowledge it), or ``("ended", job)`` when this call failed it
    (``queue_timeout``: queued since before ``queued_since``; ``attempts_exhausted``) and
    its reservation must be settled.
    """
    async with conn.transaction():
        row = await conn.fetchrow("SELECT * FROM image_jobs WHERE id = $1 FOR UPDATE", job_id)
        if row is None or row["status"] in FINISHED:
            return "done", None
        if row["status"] == "running" and row["heartbeat_at"] >= _at(stale_before):
            return "skip", None
        if (
            row["status"] == "queued"
            and row["started_at"] is None  # never started (a handed-back job has)
            and row["created_at"] < _at(queued_since)
        ):
            ended = await fail_job(
                conn, job_id, "queue_timeout", "No worker picked the job up in time.", now=now
            )
            return ("ended", ended) if ended else ("done", None)
        if row["attempts"] >= max_attempts:
            ended = await fail_job(
                conn,
                job_id,
                "attempts_exhausted",
                f"The job was interrupted {row['attempts']} times; it is not tried again.",
                now=now,
            )
            return ("ended", ended) if ended else ("done", None)
        claimed = await conn.fetchrow(
            "UPDATE image_jobs SET status = 'running', attempts = attempts + 1,"
            " started_at = coalesce(started_at, $2), heartbeat_at = $2"
            " WHERE id = $1 RETURNING *",
            job_id,
            _at(now),
        )
        return "run", JobRow.of(claimed)


async def finish_job(
    conn: Any, job_id: str, attempt: int, *, result: str, delivered: int, now: float
) -> JobRow | None:
    """Attempt ``attempt`` succeeded; None if it no longer owns the job (cancelled,
    or taken over by a later attempt): then its images are not the job's. A job that
    delivered every image it reserved has nothing to give back: it is settled here."""
    row = await conn.fetchrow(
        "UPDATE image_jobs SET status = 'succeeded', result = $3::jsonb, delivered = $4,"
        " completed_at = $5, settled_at = CASE WHEN reserved <= $4 THEN $5::timestamptz END,"
        " webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE $5::timestamptz END"
        " WHERE id = $1 AND status = 'running' AND attempts = $2"
        " RETURNING *",
        job_id,
        attempt,
        result,
        delivered,
        _at(now),
    )
    return None if row is None else JobRow.of(row)


async def fail_job(
    conn: Any,
    job_id: str,
    code: str,
    message: str,
    *,
    now: float,
    attempt: int | None = None,
) -> JobRow | None:
    """The job failed (for attempt ``attempt``, if given, only while it owns the job)."""
    row = await conn.fetchrow(
        "UPDATE image_jobs SET status = 'failed', error_code = $2, error_message = $3,"
        " completed_at = $4, "
        " webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE $4::timestamptz END"
        " WHERE id = $1 AND status IN ('queued', 'running')"
        " AND ($5::integer IS NULL OR attempts = $5)"
        " RETURNING *",
        job_id,
        code,
        message,
        _at(now),
        attempt,
    )
    return None if row is None else JobRow.of(row)


async def cancel_job(conn: Any, job_id: str, user_id: Any, *, now: float) -> JobRow | None:
    """Cancel the user's job if it is not finished; None if it was (or is not theirs)."""
    row = await conn.fetchrow(
        "UPDATE image_jobs SET status = 'canceled', completed_at = $3, "
        " webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE $3::timestamptz END"
        " WHERE id = $1 AND user_id = $2 AND status IN ('queued', 'running')"
        " RETURNING *",
        job_id,
        user_id,
        _at(now),
    )
    return None if row is None else JobRow.of(row)


async def requeue_job(conn: Any, job_id: str, attempt: int) -> bool:
    """Attempt ``attempt`` stopped unfinished (its process stops): the job is ``queued``
    again, for the next attempt; False if the attempt no longer owned it."""
    status = await conn.execute(
        "UPDATE image_jobs SET status = 'queued', heartbeat_at = NULL"
        " WHERE id = $1 AND status = 'running' AND attempts = $2",
        job_id,
        attempt,
    )
    return bool(status == "UPDATE 1")


async def heartbeat(conn: Any, job_ids: list[str], *, now: float) -> None:
    """This process still runs these jobs."""
    await conn.execute(
        "UPDATE image_jobs SET heartbeat_at = $2 WHERE id = ANY($1) AND status = 'running'",
        job_ids,
        _at(now),
    )


async def mark_settled(conn: Any, job_id: str, *, now: float) -> None:
    await conn.execute(
        "UPDATE image_jobs SET settled_at = $2 WHERE id = $1 AND settled_at IS NULL",
        job_id,
        _at(now),
    )


async def stale_queued(conn: Any, queue: str, *, queued_since: float, now: float) -> list[JobRow]:
    """Fail every job of ``queue`` still queued since before ``queued_since``."""
    rows = await conn.fetch(
        "UPDATE image_jobs SET status = 'failed', error_code = 'queue_timeout',"
        " error_message = 'No worker picked the job up in time.', completed_at = $2, "
        " webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE $2::timestamptz END"
        " WHERE queue = $3 AND status = 'queued' AND started_at IS NULL AND created_at < $1"
        " RETURNING *",
        _at(queued_since),
        _at(now),
        queue,
    )
    return [JobRow.of(row) for row in rows]


async def unsettled(
    conn: Any, queue: str, *, ended_before: float, limit: int = 500
) -> list[JobRow]:
    """Finished jobs of ``queue`` whose reservation was not settled (their process died
    in between)."""
    rows = await conn.fetch(
        "SELECT * FROM image_jobs WHERE queue = $3 AND settled_at IS NULL"
        " AND status IN ('succeeded', 'failed', 'canceled') AND completed_at < $1"
        " ORDER BY completed_at LIMIT $2",
        _at(ended_before),
        limit,
        queue,
    )
    return [JobRow.of(row) for row in rows]


async def unfinished_ids(conn: Any, queue: str) -> list[str]:
    """Jobs of ``queue`` not finished, oldest first (to rebuild a lost queue)."""
    rows = await conn.fetch(
        "SELECT id FROM image_jobs WHERE queue = $1 AND status IN ('queued', 'running')"
        " ORDER BY seq",
        queue,
    )
    return [row["id"] for row in rows]


async def count_unfinished(conn: Any, queue: str) -> dict[str, int]:
    """How many jobs of ``queue`` are ``queued`` and ``running`` now."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS jobs FROM image_jobs"
        " WHERE queue = $1 AND status IN ('queued', 'running') GROUP BY status",
        queue,
    )
    found = {"queued": 0, "running": 0}
    found.update({row["status"]: row["jobs"] for row in rows})
    return found
