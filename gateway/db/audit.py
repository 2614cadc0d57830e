"""The admin audit log."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

__all__ = ["record_admin_change"]


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
