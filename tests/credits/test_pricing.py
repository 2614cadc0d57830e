"""Prices: what one image costs by model, size, quality and operation, from the config."""

from __future__ import annotations

import msgspec

from gateway.config.pricing import PricingConfig
from gateway.credits.pricing import price, price_table

PRICING = msgspec.convert(
    {
        "default_credits_per_image": 1,
        "models": {
            "dall-e-3": {
                "credits_per_image": 4,
                "sizes": {"1792x1024": 8, "1024x1792": 8},
                "quality": {"hd": 2},
                "edit_credits_per_image": 5,
            },
            "sdxl": {"sizes": {"1024x1024": 3}},
        },
    },
    PricingConfig,
)


def test_a_model_not_listed_costs_the_default_at_any_size():
    assert price(PRICING, "local", "256x256") == 1
    assert price(PRICING, "local", "1024x1024", "hd", "edit") == 1


def test_a_listed_size_overrides_the_models_price():
    assert price(PRICING, "dall-e-3", "1024x1024") == 4
    assert price(PRICING, "dall-e-3", "1792x1024") == 8
    assert price(PRICING, "sdxl", "1024x1024") == 3
    assert price(PRICING, "sdxl", "512x512") == 1  # no credits_per_image: the default


def test_quality_multiplies_the_sizes_price():
    assert price(PRICING, "dall-e-3", "1792x1024", "hd") == 16
    assert price(PRICING, "dall-e-3", "1024x1024", "hd") == 8
    assert price(PRICING, "dall-e-3", "1024x1024", "standard") == 4
    assert price(PRICING, "dall-e-3", "1024x1024", None) == 4


def test_edits_and_variations_have_their_own_price():
    assert price(PRICING, "dall-e-3", "1792x1024", None, "edit") == 5
    assert price(PRICING, "dall-e-3", "1024x1024", "hd", "variation") == 10
    assert price(PRICING, "sdxl", "1024x1024", None, "edit") == 3  # as generated


def test_the_price_table_lists_every_model():
    assert list(price_table(PRICING, ["dall-e-3", "sdxl", "local"])) == [
        "  dall-e-3: 4 credits per image, 1792x1024: 8, 1024x1792: 8, quality hd: x2, edits: 5",
        "  sdxl: 1 credits per image, 1024x1024: 3",
        "  local: 1 credits per image",
    ]
