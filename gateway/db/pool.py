"""The asyncpg pool, and creating the database itself when it is missing."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from gateway.config import DatabaseConfig
from gateway.errors import ServiceUnavailable

__all__ = ["connection", "create_pool", "ensure_database", "split_database_url"]


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


@contextlib.asynccontextmanager
async def connection(pool: Any) -> AsyncIterator[Any]:
    """A pooled connection; Postgres being unreachable is :class:`ServiceUnavailable`."""
    try:
        conn_cm = pool.acquire()
        conn = await conn_cm.__aenter__()
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
    ) as exc:
        raise ServiceUnavailable("The database is unreachable. Please retry shortly.") from exc
    try:
        yield conn
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        await conn_cm.__aexit__(type(exc), exc, exc.__traceback__)
        raise ServiceUnavailable("The database is unreachable. Please retry shortly.") from exc
    except BaseException as exc:
        await conn_cm.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    else:
        await conn_cm.__aexit__(None, None, None)
