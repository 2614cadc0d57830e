"""What one image costs, in credits: a pure function of the config and the request.

``price(pricing, model, size, quality, operation)``:

* ``operation`` ``"generate"``: the model's ``sizes[size]``, else its
  ``credits_per_image``, else ``pricing.default_credits_per_image``;
* ``"edit"`` or ``"variation"``: the model's ``edit_credits_per_image`` when set, else as
  a generation of that size;
* then times ``quality[quality]`` (1 for a quality not listed, or none).
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.config.pricing import PricingConfig

__all__ = ["OPERATIONS", "price", "price_table"]

#: The operations a price may differ by.
OPERATIONS = ("generate", "edit", "variation")


def price(
    pricing: PricingConfig,
    model: str,
    size: str,
    quality: str | None = None,
    operation: str = "generate",
) -> int:
    """Credits per image of ``model`` at ``size`` (``"WxH"``) and ``quality``."""
    prices = pricing.models.get(model)
    if prices is None:
        return pricing.default_credits_per_image
    base: int | None = None
    if operation != "generate":
        base = prices.edit_credits_per_image
    if base is None:
        base = prices.sizes.get(size)
        if base is None:
            base = (
                prices.credits_per_image
                if prices.credits_per_image is not None
                else pricing.default_credits_per_image
            )
    if quality is not None:
        base *= prices.quality.get(quality, 1)
    return base


def price_table(pricing: PricingConfig, models: list[str]) -> Iterator[str]:
    """One line per model saying what its images cost (``gateway check-config``)."""
    for model in models:
        prices = pricing.models.get(model)
        default = pricing.default_credits_per_image
        if prices is None:
            yield f"  {model}: {default} credits per image"
            continue
        base = prices.credits_per_image if prices.credits_per_image is not None else default
        parts = [f"{base} credits per image"]
        parts += [f"{size}: {credits}" for size, credits in prices.sizes.items()]
        parts += [f"quality {name}: x{factor}" for name, factor in prices.quality.items()]
        if prices.edit_credits_per_image is not None:
            parts.append(f"edits: {prices.edit_credits_per_image}")
        yield f"  {model}: {', '.join(parts)}"
