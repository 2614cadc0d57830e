"""Edits and variations are charged at their own price (pricing's edit_credits_per_image)."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.config import merge
from tests.support.credits import CREDITS, ledger_rows, remaining
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import expect_error
from tests.support.images import pattern_png

EDIT_PRICED = merge(CREDITS, {"pricing": {"models": {"local": {"edit_credits_per_image": 4}}}})


def _form(**fields: Any) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", pattern_png(64, 64), filename="in.png", content_type="image/png")
    for name, value in fields.items():
        form.add_field(name, str(value))
    return form


async def test_an_edit_and_a_variation_cost_the_edit_price(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway(EDIT_PRICED)
    key = await make_key("metered")
    headers = {"Authorization": f"Bearer {key.key}"}
    edit = await gateway.client.post(
        "/v1/images/edits", data=_form(prompt="tidy", size="256x256"), headers=headers
    )
    assert edit.status == 200, await edit.text()
    assert remaining(edit) == 6  # 10 - 4
    variation = await gateway.client.post(
        "/v1/images/variations", data=_form(size="256x256"), headers=headers
    )
    assert remaining(variation) == 2
    refused = await gateway.client.post(
        "/v1/images/edits", data=_form(prompt="again", size="256x256"), headers=headers
    )
    await expect_error(refused, 402, "insufficient_credits", None)
    generated = await gateway.generate(key.key, size="256x256")  # 1 credit, as generated
    assert remaining(generated) == 1
    await gateway.flush()
    assert await ledger_rows(db, key.user_id) == [
        ("monthly_reset", 10),
        ("charge", -4),
        ("charge", -4),
        ("charge", -1),
    ]
