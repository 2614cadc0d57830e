"""Redis Lua scripts, shipped as ``.lua`` files beside the code that calls them."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["load_script", "script_source"]


def script_source(name: str, package: str = "gateway.limits") -> str:
    """The text of ``<package>/scripts/<name>.lua``."""
    return resources.files(package).joinpath("scripts", f"{name}.lua").read_text()


def load_script(redis: Redis, name: str, package: str = "gateway.limits") -> AsyncScript:
    """Register ``<package>/scripts/<name>.lua``: EVALSHA, reloaded on NOSCRIPT."""
    return redis.register_script(script_source(name, package))
