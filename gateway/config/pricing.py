"""The ``pricing:`` section: what an image costs in credits, per model, size and quality.

Credits are integers. A model not listed costs ``default_credits_per_image`` per image
at any size. A listed model's ``sizes`` override its ``credits_per_image`` for those
sizes, ``quality`` multiplies the size's price, and ``edit_credits_per_image`` (when
set) is the price of an edit or a variation instead of the size's price.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Annotated

from msgspec import Meta
from msgspec.structs import force_setattr

from gateway.config.errors import ConfigError
from gateway.config.section import Section, doc, says

__all__ = ["ModelPricing", "PricingConfig"]

Credits = Annotated[int, Meta(ge=0, extra=says("must be >= 0"))]
Multiplier = Annotated[int, Meta(ge=1)]
_SIZE = re.compile(r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}")
_QUALITY = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class ModelPricing(Section, frozen=True, kw_only=True):
    credits_per_image: Annotated[
        Credits | None,
        doc("Credits per image at any size not listed in sizes; unset: the default price."),
    ] = None
    sizes: Annotated[
        Mapping[str, Credits], doc('Size ("WxH") -> credits per image at that size.')
    ] = types.MappingProxyType({})
    quality: Annotated[
        Mapping[str, Multiplier],
        doc("Quality (e.g. hd) -> what it multiplies the size's price by (whole numbers)."),
    ] = types.MappingProxyType({})
    edit_credits_per_image: Annotated[
        Credits | None,
        doc("Credits per image of an edit or a variation, at any size; unset: as generated."),
    ] = None

    def __post_init__(self) -> None:
        for size in self.sizes:
            if not _SIZE.fullmatch(size):
                raise ConfigError(f"sizes.{size}: a size is WIDTHxHEIGHT, e.g. 1024x1024")
        for quality in self.quality:
            if not _QUALITY.fullmatch(quality):
                raise ConfigError(f"quality.{quality}: a quality is a lower-case word, e.g. hd")
        force_setattr(self, "sizes", types.MappingProxyType(dict(self.sizes)))
        force_setattr(self, "quality", types.MappingProxyType(dict(self.quality)))


class PricingConfig(Section, frozen=True, kw_only=True):
    default_credits_per_image: Annotated[
        Credits, doc("Credits per image of a model not listed under models, at any size.")
    ] = 1
    models: Annotated[
        Mapping[str, ModelPricing], doc("Client model name -> its prices (see ModelPricing).")
    ] = types.MappingProxyType({})

    def __post_init__(self) -> None:
        force_setattr(self, "models", types.MappingProxyType(dict(self.models)))
