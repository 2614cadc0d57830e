"""Edits and variations as jobs (``Prefer: respond-async``): the uploads reach the worker
through the object store, and are gone once the job ends."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import aiohttp
import asyncpg
import yarl

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import bearer, expect_error
from tests.support.images import pattern_png, pixels, rgba_png
from tests.support.jobs import JOBS, wait_for_job
from tests.support.usage import today, usage_rows

SIZE = 64
ASYNC = {"Prefer": "respond-async"}


def edit_form(**fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", pattern_png(SIZE, SIZE), filename="a.png", content_type="image/png")
    mask = rgba_png(SIZE, SIZE, (0, 0, SIZE // 2, SIZE))
    form.add_field("mask", mask, filename="m.png", content_type="image/png")
    form.add_field("prompt", "a red boat")
    form.add_field("size", "256x256")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


def is_stored(app: Gateway, file_id: str) -> bool:
    root = Path(app.services.config.storage.url.removeprefix("file://"))
    return any(root.rglob(file_id))


async def test_an_edit_job_runs_from_the_stored_uploads(
    app: Gateway, make_key: MakeKey, db: asyncpg.Connection
):
    key = await make_key()
    response = await app.client.post(
        "/v1/images/edits", data=edit_form(n="2"), headers={**bearer(key.key), **ASYNC}
    )
    assert response.status == 202, await response.text()
    assert response.headers["Preference-Applied"] == "respond-async"
    job = await response.json()
    assert response.headers["Location"] == f"{JOBS}/{job['id']}"
    assert (job["status"], job["n"]) == ("queued", 2)
    row = await db.fetchrow("SELECT request FROM image_jobs WHERE id = $1", job["id"])
    kept = json.loads(row["request"])
    assert kept["operation"] == "edit"
    assert [image["media_type"] for image in kept["images"]] == ["image/png"]
    uploads = [kept["images"][0]["file_id"], kept["mask"]["file_id"]]
    assert all(is_stored(app, file_id) for file_id in uploads)

    done = await wait_for_job(app.client, key.key, job["id"])
    assert done["status"] == "succeeded", done
    assert done["usage"] == {"images": 2}
    link = yarl.URL(done["data"][0]["url"])  # url: the jobs' default
    served = await app.client.get(link.path_qs)
    (width, height), out = pixels(await served.read())
    assert (width, height) == (256, 256)
    # The same edit, made synchronously, is the same picture: the uploads arrived whole.
    same = await app.client.post("/v1/images/edits", data=edit_form(n="2"), headers=bearer(key.key))
    assert same.status == 200
    direct = base64.b64decode((await same.json())["data"][0]["b64_json"])
    assert pixels(direct)[1] == out
    # The uploads are deleted once the job ended; its outputs are kept.
    assert not any(is_stored(app, file_id) for file_id in uploads)
    assert is_stored(app, link.name)
    await app.flush()
    assert await usage_rows(db, key.key_id) == {today(): 4}


async def test_a_nul_in_an_edit_jobs_prompt_is_a_400_and_makes_no_job(
    app: Gateway, make_key: MakeKey, db: asyncpg.Connection
):
    """The job's request is kept in Postgres, which cannot hold a NUL."""
    key = await make_key()
    form = aiohttp.FormData()
    form.add_field("image", pattern_png(SIZE, SIZE), filename="a.png", content_type="image/png")
    form.add_field("prompt", "a red\x00boat")
    response = await app.client.post(
        "/v1/images/edits", data=form, headers={**bearer(key.key), **ASYNC}
    )
    await expect_error(response, 400, "invalid_request", "prompt")
    assert await db.fetchval("SELECT count(*) FROM image_jobs WHERE user_id = $1", key.user_id) == 0


async def test_a_variation_job_in_b64_json(app: Gateway, make_key: MakeKey):
    key = await make_key()
    form = aiohttp.FormData()
    form.add_field("image", pattern_png(SIZE, SIZE), filename="a.png", content_type="image/png")
    form.add_field("size", "256x256")
    form.add_field("response_format", "b64_json")
    response = await app.client.post(
        "/v1/images/variations", data=form, headers={**bearer(key.key), **ASYNC}
    )
    assert response.status == 202, await response.text()
    done = await wait_for_job(app.client, key.key, (await response.json())["id"])
    assert done["status"] == "succeeded", done
    image = base64.b64decode(done["data"][0]["b64_json"])
    assert pixels(image)[0] == (256, 256)


async def test_an_edit_job_keeps_its_parameters_with_its_uploads(
    app: Gateway, make_key: MakeKey, db: asyncpg.Connection
):
    key = await make_key()
    fields = {"output_format": "jpeg", "output_compression": "40", "user": "end-user-7"}
    response = await app.client.post(
        "/v1/images/edits",
        data=edit_form(response_format="b64_json", **fields),
        headers={**bearer(key.key), **ASYNC},
    )
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]
    row = await db.fetchrow("SELECT request FROM image_jobs WHERE id = $1", job_id)
    kept = json.loads(row["request"])
    assert (kept["operation"], kept["output_format"], kept["output_compression"]) == (
        "edit",
        "jpeg",
        40,
    )
    assert kept["user"] == "end-user-7"
    assert kept["mask"] is not None
    assert "options" not in kept  # one representation: the typed parameters
    done = await wait_for_job(app.client, key.key, job_id)
    assert done["status"] == "succeeded", done
    image = base64.b64decode(done["data"][0]["b64_json"])
    assert image[:3] == b"\xff\xd8\xff"  # the job's edit is a JPEG, as asked
    same = await app.client.post(
        "/v1/images/edits", data=edit_form(**fields), headers=bearer(key.key)
    )
    assert base64.b64decode((await same.json())["data"][0]["b64_json"]) == image


async def test_an_upload_over_the_quota_makes_no_job(
    make_app: MakeGateway, make_key: MakeKey, db: asyncpg.Connection, tmp_path: Path
):
    app = await make_app({"storage": {"url": f"file://{tmp_path}"}})
    key = await make_key(images_per_day=1)
    response = await app.client.post(
        "/v1/images/edits", data=edit_form(n="2"), headers={**bearer(key.key), **ASYNC}
    )
    assert response.status == 429
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # the uploads let go
    count = await db.fetchval("SELECT count(*) FROM image_jobs WHERE api_key_id = $1", key.key_id)
    assert count == 0
