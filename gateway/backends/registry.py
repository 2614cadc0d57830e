"""Backend types by name: the built-in ones and those of the ``gateway.backends`` entry points.

Unknown or duplicate names fail loudly, naming the config key at fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from gateway.backends.a1111 import A1111Backend
from gateway.backends.base import ImageBackend
from gateway.backends.gemini import GeminiBackend
from gateway.backends.http import HttpBackend
from gateway.backends.local import LocalBackend
from gateway.backends.openai import OpenAIBackend
from gateway.backends.replicate import ReplicateBackend
from gateway.backends.resilience import GuardedBackend
from gateway.config import BackendConfig, Config, ConfigError

__all__ = ["ENTRY_POINT_GROUP", "BackendRegistry", "Router", "default_registry"]

ENTRY_POINT_GROUP = "gateway.backends"
BackendFactory = Callable[[str, Mapping[str, Any]], ImageBackend]


class BackendRegistry:
    def __init__(self) -> None:
        self._types: dict[str, BackendFactory] = {}

    def register(self, type_name: str, factory: BackendFactory) -> None:
        if type_name in self._types and self._types[type_name] is not factory:
            raise ValueError(f"backend type {type_name!r} is registered twice")
        self._types[type_name] = factory

    def load_entry_points(self) -> None:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name in self._types:
                continue  # a built-in, or the same package listed twice
            self.register(entry.name, entry.load())

    @property
    def types(self) -> list[str]:
        return sorted(self._types)

    def create(self, config: BackendConfig) -> ImageBackend:
        factory = self._types.get(config.type)
        if factory is None:
            known = ", ".join(self.types)
            raise ConfigError(
                f"backends.{config.name}.type: unknown backend type {config.type!r}"
                f" (known: {known})"
            )
        return factory(config.name, config.options)


def default_registry() -> BackendRegistry:
    registry = BackendRegistry()
    registry.register("local", LocalBackend)
    registry.register("http", HttpBackend)
    registry.register("openai", OpenAIBackend)
    registry.register("a1111", A1111Backend)
    registry.register("gemini", GeminiBackend)
    registry.register("replicate", ReplicateBackend)
    registry.load_entry_points()
    return registry


class Router:
    """Maps a client's model name to the backends that serve it, first choice first."""

    def __init__(
        self,
        config: Config,
        registry: BackendRegistry,
        clock: Callable[[], float] = time.monotonic,
        *,
        prebuilt: Mapping[str, GuardedBackend] | None = None,
    ) -> None:
        """``prebuilt``: backends already built, by name, used as they are (a config
        reload keeps the running ones whose config did not change)."""
        prebuilt = prebuilt or {}
        self.backends = {
            name: prebuilt.get(name) or GuardedBackend(registry.create(bc), bc.resilience, clock)
            for name, bc in config.backends.items()
        }
        self.models = {
            model: tuple(self.backends[name] for name in chain)
            for model, chain in config.models.items()
        }
        for model, fallback in config.model_fallback.items():
            if fallback == "never":  # only the first backend answers this model
                self.models[model] = self.models[model][:1]
        self.default_model = config.default_model

    def for_model(self, model: str | None) -> tuple[str, tuple[GuardedBackend, ...]] | None:
        name = model if model is not None else self.default_model
        chain = self.models.get(name)
        return (name, chain) if chain is not None else None
