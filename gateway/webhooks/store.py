"""The webhooks' SQL: secrets' nonces, claiming due webhooks, the delivery log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.jobs.store import JobRow

__all__ = [
    "claim_due",
    "delivery_done",
    "find_nonce",
    "record_attempt",
    "set_nonce",
]


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def set_nonce(
    conn: Any, user_id: Any, nonce: str, *, now: float, previous_until: float | None
) -> float | None:
    """Make ``nonce`` the user's; the one it replaces stays valid until ``previous_until``
    (None: not at all). Returns when the previous one stops being valid (None if the
    user had none)."""
    until: dt.datetime | None = await conn.fetchval(
        "INSERT INTO webhook_secrets (user_id, nonce, created_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_id) DO UPDATE SET nonce = $2, created_at = $3,"
        " previous_nonce = CASE WHEN $4::timestamptz IS NULL THEN NULL"
        " ELSE webhook_secrets.nonce END, previous_until = $4::timestamptz"
        " RETURNING previous_until",
        user_id,
        nonce,
        _at(now),
        None if previous_until is None else _at(previous_until),
    )
    return None if until is None else until.timestamp()


async def find_nonce(conn: Any, user_id: Any) -> str | None:
    nonce: str | None = await conn.fetchval(
        "SELECT nonce FROM webhook_secrets WHERE user_id = $1", user_id
    )
    return nonce


async def claim_due(
    conn: Any, queue: str, *, now: float, lease_seconds: float, limit: int = 20
) -> list[tuple[JobRow, list[str]]]:
    """Jobs of ``queue`` whose webhook is due, each now this process's for
    ``lease_seconds`` (its attempt counted), so no other process sends it meanwhile; each
    with the nonces to sign it with, read in the same query: the current one, then the
    previous one while its rotation's grace lasts."""
    rows = await conn.fetch(
        "WITH claimed AS (UPDATE image_jobs"
        " SET webhook_next_at = $2, webhook_attempts = webhook_attempts + 1"
        " WHERE id IN (SELECT id FROM image_jobs WHERE queue = $1"
        " AND webhook_next_at IS NOT NULL AND webhook_next_at <= $3"
        " ORDER BY webhook_next_at LIMIT $4 FOR UPDATE SKIP LOCKED)"
        " RETURNING *)"
        " SELECT claimed.*, secret.nonce AS secret_nonce,"
        " CASE WHEN secret.previous_until > $3 THEN secret.previous_nonce END AS secret_previous"
        " FROM claimed LEFT JOIN webhook_secrets AS secret ON secret.user_id = claimed.user_id",
        queue,
        _at(now + lease_seconds),
        _at(now),
        limit,
    )
    return [
        (
            JobRow.of(row),
            [nonce for nonce in (row["secret_nonce"], row["secret_previous"]) if nonce],
        )
        for row in rows
    ]


async def record_attempt(
    conn: Any,
    job: JobRow,
    webhook_id: str,
    *,
    status_code: int | None,
    error: str | None,
    now: float,
    next_at: float | None,
    delivered: bool,
) -> None:
    """Log one delivery; ``next_at``: when to try again (None: delivered, or given up)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_deliveries (job_id, webhook_id, attempt, status_code, error,"
            " attempted_at) VALUES ($1, $2, $3, $4, $5, $6)",
            job.id,
            webhook_id,
            job.webhook_attempts,
            status_code,
            error,
            _at(now),
        )
        await conn.execute(
            "UPDATE image_jobs SET webhook_next_at = $2,"
            " webhook_done_at = CASE WHEN $4::boolean THEN $3::timestamptz END WHERE id = $1",
            job.id,
            None if next_at is None else _at(next_at),
            _at(now),
            delivered,
        )


async def delivery_done(conn: Any, job_id: str) -> bool:
    done: bool = await conn.fetchval(
        "SELECT webhook_done_at IS NOT NULL FROM image_jobs WHERE id = $1", job_id
    )
    return done
