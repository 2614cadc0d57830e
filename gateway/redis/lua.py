"""Redis Lua scripts, shipped as ``.lua`` files beside the code that calls them."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["load_script", "script_source"]

_INCLUDE = "--#include "


def script_source(name: str, package: str = "gateway.limits") -> str:
    """The text of ``<package>/scripts/<name>.lua``, each ``--#include NAME`` line replaced
    by the text of ``NAME.lua`` beside it, or of another package's with
    ``--#include PACKAGE:NAME`` (Redis scripts cannot load one another)."""
    text = resources.files(package).joinpath("scripts", f"{name}.lua").read_text()
    if _INCLUDE not in text:
        return text
    return "".join(
        _included(line[len(_INCLUDE) :].strip(), package) if line.startswith(_INCLUDE) else line
        for line in text.splitlines(keepends=True)
    )


def _included(reference: str, package: str) -> str:
    other, _, name = reference.rpartition(":")
    return script_source(name, other or package)


def load_script(redis: Redis, name: str, package: str = "gateway.limits") -> AsyncScript:
    """Register ``<package>/scripts/<name>.lua``: EVALSHA, reloaded on NOSCRIPT."""
    return redis.register_script(script_source(name, package))
