"""The admin audit log: who changed what (through the admin API or the CLI), and when."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

__all__ = ["list_admin_changes", "record_admin_change"]


async def record_admin_change(
    conn: Any, *, actor: str, action: str, target_id: uuid.UUID, details: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO admin_audit_log (actor, action, target_id, details) "
        "VALUES ($1, $2, $3, $4::jsonb)",
        actor,
        action,
        target_id,
        orjson.dumps(details).decode(),
    )


async def list_admin_changes(
    conn: Any,
    *,
    limit: int,
    actor: str | None = None,
    target_id: uuid.UUID | None = None,
    after: uuid.UUID | None = None,
) -> list[dict[str, Any]] | None:
    """Entries newest first, those older than the entry ``after`` (None if there is no
    such entry), by ``actor`` and about ``target_id`` when given."""
    if after is not None and not await conn.fetchval(
        "SELECT 1 FROM admin_audit_log WHERE id = $1", after
    ):
        return None
    rows = await conn.fetch(
        """
        SELECT id, actor, action, target_id, details::text AS details, created_at
        FROM admin_audit_log
        WHERE ($2::text IS NULL OR actor = $2)
          AND ($3::uuid IS NULL OR target_id = $3)
          AND ($4::uuid IS NULL
               OR (created_at, id) < (SELECT created_at, id FROM admin_audit_log WHERE id = $4))
        ORDER BY created_at DESC, id DESC LIMIT $1
        """,
        limit,
        actor,
        target_id,
        after,
    )
    return [{**dict(r), "details": orjson.loads(r["details"])} for r in rows]
