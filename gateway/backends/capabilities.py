"""What a backend accepts of OpenAI's image parameters, and the check of a request against it.

OpenAI's Images API has parameters that not every upstream can honour: ``quality``,
``style``, ``background``, ``output_format``, ``output_compression``, ``moderation``,
``input_fidelity`` (edits only), ``stream``. A backend type declares, per parameter, the
values it can carry to its upstream in the upstream's own terms (:class:`Capabilities`;
the openai type per upstream model); an operator may narrow them in the backend's config
(``capabilities:``). A request with a value the model's backend does not accept is a 400
naming the parameter and listing what the model accepts (:func:`check_request`): nothing
is silently dropped.

Generations, edits and variations share the parameters, so the check takes an
:class:`~gateway.backends.base.ImageRequest`, whichever body it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError
from gateway.errors import InvalidRequest

if TYPE_CHECKING:
    from gateway.backends.base import ImageRequest

__all__ = [
    "ALL_CAPABILITIES",
    "CHOICES",
    "MAX_PARTIAL_IMAGES",
    "Capabilities",
    "capabilities_option",
    "check_request",
    "unsupported",
]

#: Every value each parameter with a list of values may take (OpenAI's, in its order).
CHOICES: Mapping[str, tuple[str, ...]] = {
    "quality": ("auto", "standard", "hd", "low", "medium", "high"),
    "style": ("vivid", "natural"),
    "background": ("auto", "transparent", "opaque"),
    "output_format": ("png", "jpeg", "webp"),
    "moderation": ("auto", "low"),
    "input_fidelity": ("high", "low"),
}
#: The most partial images a streamed image may have (OpenAI's limit).
MAX_PARTIAL_IMAGES = 3


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The values a backend accepts, per parameter. An empty tuple: the parameter is not
    accepted at all (sending it is a 400); leaving a parameter out of a request is always
    fine (the backend's default)."""

    quality: tuple[str, ...] = ("auto",)
    style: tuple[str, ...] = ()
    background: tuple[str, ...] = ("auto",)
    output_format: tuple[str, ...] = ("png",)
    moderation: tuple[str, ...] = ("auto",)
    #: An edit's ``input_fidelity`` (how closely it keeps the input images' details).
    input_fidelity: tuple[str, ...] = ()
    #: ``output_compression`` (0-100) is honoured (for ``jpeg`` and ``webp``).
    output_compression: bool = False
    #: ``stream: true`` (partial images as Server-Sent Events) is possible.
    stream: bool = False

    def accepts(self, param: str, value: Any) -> bool:
        if param == "output_compression" or param == "stream":
            return bool(getattr(self, param))
        return value in getattr(self, param)

    def narrowed(self, allowed: Capabilities) -> Capabilities:
        """These capabilities, limited to what ``allowed`` accepts."""
        return replace(
            self,
            **{
                name: tuple(v for v in getattr(self, name) if v in getattr(allowed, name))
                for name in CHOICES
            },
            output_compression=self.output_compression and allowed.output_compression,
            stream=self.stream and allowed.stream,
        )


#: A backend that carries every parameter through (an OpenAI-compatible upstream).
ALL_CAPABILITIES = Capabilities(
    **{name: values for name, values in CHOICES.items()},
    output_compression=True,
    stream=True,
)

_FLAGS = tuple(f.name for f in fields(Capabilities) if f.name not in CHOICES)


def capabilities_option(
    name: str, options: Mapping[str, Any], ceiling: Capabilities
) -> Mapping[str, Any]:
    """The backend's ``capabilities:`` option: per parameter, the values it may take
    (a list), or for ``output_compression`` and ``stream`` true/false. Only what the
    backend type can carry (``ceiling``) may be listed; parameters not given keep the
    type's own values: the overrides, for :func:`dataclasses.replace` (empty if the
    option is absent).
    """
    value = options.get("capabilities")
    if value is None:
        return {}
    prefix = f"backends.{name}.capabilities"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{prefix}: must be a mapping of parameter -> accepted values")
    given: dict[str, Any] = {}
    for param, accepted in value.items():
        if param in CHOICES:
            if not isinstance(accepted, list | tuple) or not all(
                isinstance(v, str) for v in accepted
            ):
                raise ConfigError(f"{prefix}.{param}: must be a list of values")
            for item in accepted:
                if item not in CHOICES[param]:
                    raise ConfigError(
                        f"{prefix}.{param}: {item!r} is not one of {', '.join(CHOICES[param])}"
                    )
                if item not in getattr(ceiling, param):
                    can = ", ".join(getattr(ceiling, param)) or "nothing"
                    raise ConfigError(
                        f"{prefix}.{param}: this backend type cannot send {item!r} upstream"
                        f" (it can: {can})"
                    )
            given[param] = tuple(accepted)
        elif param in _FLAGS:
            if not isinstance(accepted, bool):
                raise ConfigError(f"{prefix}.{param}: must be true or false")
            if accepted and not getattr(ceiling, param):
                raise ConfigError(f"{prefix}.{param}: this backend type cannot {param}")
            given[param] = accepted
        else:
            known = ", ".join((*CHOICES, *_FLAGS))
            raise ConfigError(f"{prefix}.{param}: unknown parameter (known: {known})")
    return given


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A parameter of a request its backend does not accept."""

    param: str
    value: Any
    accepted: tuple[str, ...] = field(default=())


def unsupported(request: ImageRequest, capabilities: Capabilities) -> Unsupported | None:
    """The first parameter of ``request`` that ``capabilities`` do not accept, if any."""
    for param in CHOICES:
        value = getattr(request, param)
        if value is not None and value not in getattr(capabilities, param):
            return Unsupported(param, value, getattr(capabilities, param))
    if request.output_compression is not None and not capabilities.output_compression:
        return Unsupported("output_compression", request.output_compression)
    if request.stream and not capabilities.stream:
        return Unsupported("stream", True)
    return None


def check_request(request: ImageRequest, capabilities: Capabilities, model: str) -> None:
    """Raise the 400 naming the first parameter of ``request`` that model ``model``'s
    backend (``capabilities``) does not accept, and listing what it accepts."""
    found = unsupported(request, capabilities)
    if found is None:
        return
    param = found.param
    if param == "stream":
        raise InvalidRequest(
            f"Model '{model}' cannot stream: send 'stream': false (or leave it out) to get"
            " the images in one response.",
            param="stream",
        )
    if param == "output_compression":
        raise InvalidRequest(
            f"'output_compression' is not available for model '{model}'; leave it out.",
            param=param,
        )
    if not found.accepted:
        raise InvalidRequest(
            f"'{param}' is not available for model '{model}'; leave it out.", param=param
        )
    raise InvalidRequest(
        f"'{param}' {found.value!r} is not available for model '{model}'; "
        f"it accepts: {', '.join(found.accepted)}.",
        param=param,
    )
