"""Schema migrations with yoyo (plain SQL files in ``migrations/``, each with a rollback)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from yoyo import get_backend, read_migrations

from gateway.db.pool import ensure_database

__all__ = ["apply", "migrations_dir", "rollback"]


def migrations_dir() -> Path:
    """``$GATEWAY_MIGRATIONS``, else ``./migrations``, else the one beside the package."""
    explicit = os.environ.get("GATEWAY_MIGRATIONS")
    if explicit:
        return Path(explicit)
    local = Path("migrations")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent / "migrations"


def _yoyo_url(url: str) -> str:
    scheme, _sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def apply(database_url: str, directory: Path | None = None) -> list[str]:
    """Create the database if needed and apply pending migrations; their ids."""
    asyncio.run(ensure_database(database_url))
    backend = get_backend(_yoyo_url(database_url))
    migrations = read_migrations(str(directory or migrations_dir()))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def rollback(database_url: str, directory: Path | None = None, steps: int = 1) -> list[str]:
    """Roll back the ``steps`` most recent migrations; their ids."""
    backend = get_backend(_yoyo_url(database_url))
    migrations = read_migrations(str(directory or migrations_dir()))
    with backend.lock():
        applied = backend.to_rollback(migrations)[:steps]
        backend.rollback_migrations(applied)
    return [m.id for m in applied]
