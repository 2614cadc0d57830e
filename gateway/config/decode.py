"""Strict decoding into the config structs, and msgspec's errors in an operator's words.

msgspec says ``Expected `int` >= 1 - at `$.plans[...].requests_per_minute```; an operator
reads ``plans.free.requests_per_minute: must be > 0``. The key is rebuilt from the error's
path (msgspec does not name a mapping's entry, so the failing entry is found by decoding
the entries again, one by one), and the words come from the kind of error and from the
field's own ``msgspec.Meta``: its constraint, or its :func:`~gateway.config.schema.says`.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

from gateway.config.errors import ConfigError

__all__ = ["decode"]

T = TypeVar("T")

_AT = re.compile(r"(?s)(.*) - at `\$(.*)`")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")
_MISSING = re.compile(r"Object missing required field `(.+)`")
_WRONG_TYPE = re.compile(r"Expected `(\w+)`, got `(\w+)`")
_TYPE_WORDS = {
    "int": "must be a whole number",
    "float": "must be a number",
    "str": "must be a string",
    "bool": "must be true or false",
    "array": "must be a list",
    "object": "must be a mapping",
}


def decode(raw: Any, cls: type[T]) -> T:
    """``raw`` (plain YAML data) as a ``cls``; :class:`ConfigError` naming the key if not.

    Strict: no value is coerced (``"8080"`` is not a port, ``yes`` not a number).
    """
    try:
        return msgspec.convert(raw, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(exc, raw, cls, []) from None


def _explain(
    exc: msgspec.ValidationError, raw: Any, annotation: Any, keys: list[str]
) -> ConfigError:
    """The error for ``exc``, raised decoding ``raw`` as ``annotation`` at ``keys``."""
    found = _AT.fullmatch(str(exc))
    text, path = (found[1], found[2]) if found else (str(exc), "")
    keys = list(keys)
    for field, index in _STEP.findall(path):
        base = _strip(annotation)
        if field:
            annotation = get_type_hints(base, include_extras=True)[field]
            raw = raw[field]
            keys.append(field)
        elif index == "...":  # an entry of a mapping, unnamed: decode each until one fails
            entry_type = get_args(base)[1]
            for name, entry in raw.items():
                try:
                    msgspec.convert(entry, entry_type, strict=True)
                except msgspec.ValidationError as inner:
                    return _explain(inner, entry, entry_type, [*keys, str(name)])
            break  # pragma: no cover - an entry failed as a whole, so one fails alone
        else:
            annotation = _item_type(base)
            raw = raw[int(index)]
            keys[-1] += f"[{index}]"

    if isinstance(exc.__cause__, ConfigError):  # from a __post_init__: a key of its own
        return ConfigError(_key([*keys, str(exc.__cause__)]))
    if unknown := _UNKNOWN.fullmatch(text):
        return ConfigError(f"{_key([*keys, unknown[1]])}: unknown key")
    if missing := _MISSING.fullmatch(text):
        field_type = get_type_hints(_strip(annotation), include_extras=True)[missing[1]]
        said = _says(field_type)
        words = said["message"] if said and said["always"] else "required"
        return ConfigError(f"{_key([*keys, missing[1]])}: {words}")
    said = _says(annotation)
    if said and said["always"]:
        return ConfigError(f"{_key(keys)}: {said['message']}")
    if wrong := _WRONG_TYPE.fullmatch(text):
        expected, got = wrong[1], wrong[2]
        words = _TYPE_WORDS.get(expected, f"must be of type {expected}")
        if (expected, got) == ("object", "null"):
            words = "required"
        return ConfigError(f"{_key(keys)}: {words}")
    # The value has the right type but breaks the field's constraint.
    words = said["message"] if said else _constraint_words(annotation, text)
    return ConfigError(f"{_key(keys)}: {words}")


def _key(parts: list[str]) -> str:
    return ".".join(parts) if parts else "config"


def _strip(annotation: Any) -> Any:
    """The type under ``Annotated[...]``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _metas(annotation: Any) -> list[msgspec.Meta]:
    metas: list[msgspec.Meta] = []
    while get_origin(annotation) is Annotated:
        metas += [m for m in annotation.__metadata__ if isinstance(m, msgspec.Meta)]
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):  # an optional value: its type's
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            metas += _metas(options[0])
    return metas


def _says(annotation: Any) -> dict[str, Any] | None:
    for meta in _metas(annotation):
        if meta.extra and "message" in meta.extra:
            return meta.extra
    return None


def _item_type(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):  # the list among the options
        annotation = next(
            _strip(a) for a in get_args(annotation) if get_origin(_strip(a)) in (list, tuple)
        )
    return get_args(annotation)[0]


def _constraint_words(annotation: Any, fallback: str) -> str:
    """``must be > 0``, ``must be between 1 and 65535``... from the field's ``Meta``."""
    bounds: dict[str, Any] = {}
    for meta in _metas(annotation):
        for name in ("gt", "ge", "lt", "le", "min_length"):
            if getattr(meta, name) is not None:
                bounds[name] = getattr(meta, name)
    if "ge" in bounds and "le" in bounds:
        low, high = bounds["ge"], bounds["le"]
        if _strip(annotation) is int:
            return f"must be between {low} and {high}"
        return f"must be from {low:g} to {high:g}"
    for name, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if name in bounds:
            return f"must be {sign} {bounds[name]:g}"
    if "min_length" in bounds:
        return f"must have at least {bounds['min_length']} entries"
    return fallback[:1].lower() + fallback[1:]
