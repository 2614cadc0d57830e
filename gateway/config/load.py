"""Reading ``config.yaml``: YAML, then the environment, then strict decoding.

1. YAML (safe) into plain data; a syntax error or a key given twice names the file and line.
2. ``${VAR}`` / ``${VAR:-default}`` in string values are replaced from the environment.
3. ``DATABASE_URL``, ``REDIS_URL`` and ``GATEWAY_JWT_SECRET`` override their keys.
4. Shorthands are spelled out (``workers: auto``, a model naming one backend), and each
   backend's own options are gathered under ``options``.
5. The data is decoded strictly into :class:`~gateway.config.schema.Config`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gateway.config.decode import decode
from gateway.config.errors import ConfigError
from gateway.config.schema import BackendConfig, Config

__all__ = [
    "default_config_path",
    "default_storage_url",
    "load_config",
    "parse_config",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: The keys of a backend that are not the backend type's own options.
_BACKEND_KEYS = frozenset(f.name for f in msgspec.structs.fields(BackendConfig)) - {
    "name",
    "options",
}


def default_config_path() -> Path:
    return Path(os.environ.get("GATEWAY_CONFIG", "config.yaml"))


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, interpolate and validate a YAML config file (``environ``: ``os.environ``)."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text") from None
    raw = _read_yaml(text, path)
    return parse_config(raw if raw is not None else {}, os.environ if environ is None else environ)


def parse_config(raw: Any, environ: Mapping[str, str]) -> Config:
    """Validate an already-parsed document (a mapping) into a :class:`Config`."""
    raw = _interpolate(raw, "", environ)
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a mapping")
    raw = _apply_env_overrides(raw, environ)
    raw = _storage_default(raw, environ)
    raw = _spell_out(raw)
    return decode(raw, Config)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last silently, and a typo'd duplicate would go unnoticed)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = ""
        if exc.context and exc.context_mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(f"{path}: not valid YAML: {where}{exc.problem}{context}") from None
    except yaml.YAMLError as exc:
        flat = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML: {flat}") from None


def _interpolate(value: Any, path: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = environ.get(name)
            if found or (found is not None and default is None):
                return found
            if default is not None:
                return default
            raise ConfigError(f"{path or 'config'}: environment variable {name} is not set")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path + '.' if path else ''}{k}: keys must be strings")
            out[k] = _interpolate(v, f"{path}.{k}" if path else k, environ)
        return out
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    return value


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """``raw[name]`` as a mapping (empty when absent) to override keys in."""
    body = raw.get(name)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"{name}: must be a mapping")
    return body


def _apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    raw = dict(raw)
    for var, section, key in (("DATABASE_URL", "database", "url"), ("REDIS_URL", "redis", "url")):
        if environ.get(var):
            raw[section] = {**_section(raw, section), key: environ[var]}
    secret = environ.get("GATEWAY_JWT_SECRET")
    if secret:
        body = _section(raw, "auth")
        configured = body.get("jwt_secrets") or []
        if not isinstance(configured, list):
            raise ConfigError("auth.jwt_secrets: must be a list")
        rest = [s for s in configured if s != secret]
        raw["auth"] = {**body, "jwt_secrets": [secret, *rest]}
    return raw


def default_storage_url(environ: Mapping[str, str]) -> str:
    """The image store of a config that names none: a folder under ``GATEWAY_DATA_DIR``."""
    return f"file://{environ.get('GATEWAY_DATA_DIR') or './.data'}/images"


def _storage_default(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    storage = raw.get("storage")
    if storage is None:
        storage = {}
    if isinstance(storage, dict) and "url" not in storage:
        raw["storage"] = {**storage, "url": default_storage_url(environ)}
    return raw


def _spell_out(raw: dict[str, Any]) -> dict[str, Any]:
    """The document with its shorthands written in full, in the shape the structs have."""
    server = raw.get("server")
    if isinstance(server, dict) and server.get("workers") == "auto":
        raw["server"] = {**server, "workers": 0}
    models = raw.get("models")
    if isinstance(models, dict):  # a model naming one backend: a chain of one
        raw["models"] = {m: [c] if isinstance(c, str) else c for m, c in models.items()}
    backends = raw.get("backends")
    if isinstance(backends, dict):
        raw["backends"] = {name: _backend(name, body) for name, body in backends.items()}
    return raw


def _backend(name: str, body: Any) -> Any:
    """A backend's keys, its type's own options gathered under ``options``."""
    if not isinstance(body, dict):
        return body
    own = {k: v for k, v in body.items() if k in _BACKEND_KEYS}
    options = {k: v for k, v in body.items() if k not in _BACKEND_KEYS}
    return {**own, "options": options, "name": name}
