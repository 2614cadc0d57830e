"""The asyncpg pool, and creating the database itself when it is missing."""

from __future__ import annotations

import urllib.parse
from typing import Any

import asyncpg

from gateway.config import DatabaseConfig

__all__ = ["create_pool", "ensure_database", "split_database_url"]


async def create_pool(config: DatabaseConfig) -> Any:
    return await asyncpg.create_pool(
        config.url,
        min_size=config.pool_min_size,
        max_size=config.pool_max_size,
        command_timeout=config.command_timeout_seconds,
    )


def split_database_url(url: str) -> tuple[str, str]:
    """``(url of the server's postgres database, database name)`` for a database URL."""
    parts = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(parts.path.lstrip("/")) or "postgres"
    return urllib.parse.urlunsplit(parts._replace(path="/postgres")), name


async def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True if it was created."""
    server_url, name = split_database_url(url)
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()
