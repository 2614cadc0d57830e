"""Redis Lua scripts, shipped as ``.lua`` files beside the code that calls them."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["load_script"]


def load_script(redis: Redis, name: str, package: str = "gateway.limits") -> AsyncScript:
    """Register ``<package>/scripts/<name>.lua``: EVALSHA, reloaded on NOSCRIPT."""
    source = resources.files(package).joinpath("scripts", f"{name}.lua").read_text()
    return redis.register_script(source)
