"""The usage export: every key's images and credits per day, model and backend, as CSV or
JSON Lines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from tests.support.config import ADMIN_TOKEN
from tests.support.credits import CREDITS
from tests.support.gateway import MakeGateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.usage import store_usage


async def test_export_streams_images_and_credits_per_user_key_day_and_model(
    make_gateway: MakeGateway, make_key: MakeKey, db: Any
):
    gateway = await make_gateway(CREDITS)
    metered, free = await make_key("metered"), await make_key("pro")
    assert (await gateway.generate(metered.key, n=2, size="512x512")).status == 200
    assert (await gateway.generate(metered.key, n=1, size="256x256")).status == 200
    assert (await gateway.generate(free.key, n=3)).status == 200
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    await store_usage(db, free.key_id, yesterday, 4, model="")  # before models were recorded
    today = dt.datetime.now(dt.UTC).date()
    url = f"/admin/usage/export?start={yesterday}&end={today}"
    response = await gateway.client.get(url, headers=bearer(ADMIN_TOKEN))
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert rows[0] == [
        "user_id",
        "email",
        "api_key_id",
        "date",
        "model",
        "backend",
        "images",
        "credits",
    ]
    mine = {
        (row[2], row[3], row[4], row[5]): (row[6], row[7])
        for row in rows[1:]
        if row[2] in (str(metered.key_id), str(free.key_id))
    }
    assert mine == {
        (str(metered.key_id), str(today), "local", "local"): ("3", "7"),
        (str(free.key_id), str(yesterday), "", "local"): ("4", "0"),
        (str(free.key_id), str(today), "local", "local"): ("3", "0"),
    }
    lines = await gateway.client.get(url + "&format=jsonl", headers=bearer(ADMIN_TOKEN))
    assert lines.headers["Content-Type"] == "application/jsonl; charset=utf-8"
    objects = [json.loads(line) for line in (await lines.text()).splitlines()]
    assert {
        "user_id": str(metered.user_id),
        "api_key_id": str(metered.key_id),
        "date": str(today),
        "model": "local",
        "backend": "local",
        "images": 3,
        "credits": 7,
    }.items() <= next(o for o in objects if o["api_key_id"] == str(metered.key_id)).items()


async def test_export_needs_a_sane_range_and_format(make_gateway: MakeGateway):
    gateway = await make_gateway()
    admin = bearer(ADMIN_TOKEN)
    get = gateway.client.get
    await expect_error(
        await get("/admin/usage/export?end=2026-01-01", headers=admin), 400, "invalid_request",
        "start",
    )  # fmt: skip
    await expect_error(
        await get("/admin/usage/export?start=2024-01-01&end=2026-01-01", headers=admin),
        400, "invalid_request", "start",
    )  # fmt: skip
    await expect_error(
        await get("/admin/usage/export?start=2026-01-01&end=2026-01-02&format=xml", headers=admin),
        400, "invalid_request", "format",
    )  # fmt: skip
    await expect_error(await get("/admin/usage/export?start=2026-01-01&end=2026-01-02"), 401,
                       "invalid_token")  # fmt: skip
