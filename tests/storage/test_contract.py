"""The file store contract, held against every kind of store (file, file read through
obstore, memory, S3 on a moto server)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest

from gateway import errors
from gateway.metrics import Metrics
from gateway.storage import ByteRange, FileBody, FileStore
from gateway.storage.ids import FILE_ID
from tests.support.metrics import metric_total

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(4096)


async def read_all(body: FileBody) -> bytes:
    try:
        return b"".join([chunk async for chunk in body.chunks()])
    finally:
        body.close()


async def test_put_then_read_back_exact_bytes(store: FileStore):
    info = await store.put(PNG, "image/png")
    assert FILE_ID.fullmatch(info.file_id)
    assert info.file_id.endswith(".png")
    assert (info.content_type, info.size) == ("image/png", len(PNG))
    head = await store.head(info.file_id)
    assert (head.file_id, head.content_type, head.size) == (info.file_id, "image/png", len(PNG))
    assert abs((head.last_modified - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    body = await store.open(info.file_id)
    assert (body.start, body.stop, body.partial) == (0, len(PNG), False)
    assert body.info.content_type == "image/png"
    assert await read_all(body) == PNG


@pytest.mark.parametrize(
    ("content_type", "extension", "served_as"),
    [
        ("image/jpeg", "jpg", "image/jpeg"),
        ("image/webp", "webp", "image/webp"),
        ("IMAGE/PNG; foo=bar", "png", "image/png"),
        ("image/svg+xml", "bin", "application/octet-stream"),  # never served as markup
        ("text/html", "bin", "application/octet-stream"),
    ],
)
async def test_content_type_travels_with_the_id(
    store: FileStore, content_type: str, extension: str, served_as: str
):
    info = await store.put(b"data", content_type)
    assert info.file_id.endswith("." + extension)
    assert (await store.head(info.file_id)).content_type == served_as


@pytest.mark.parametrize(
    ("requested", "span"),
    [
        (ByteRange(first=0, last=0), (0, 1)),
        (ByteRange(first=100, last=199), (100, 200)),
        (ByteRange(first=4000), (4000, 4104)),
        (ByteRange(first=4000, last=999_999), (4000, 4104)),  # clipped to the end
        (ByteRange(suffix=10), (4094, 4104)),
        (ByteRange(suffix=999_999), (0, 4104)),
    ],
)
async def test_byte_ranges(store: FileStore, requested: ByteRange, span: tuple[int, int]):
    info = await store.put(PNG, "image/png")
    body = await store.open(info.file_id, requested)
    assert (body.start, body.stop) == span
    assert body.info.size == len(PNG)
    assert await read_all(body) == PNG[span[0] : span[1]]


@pytest.mark.parametrize("requested", [ByteRange(first=4104), ByteRange(suffix=0)])
async def test_unsatisfiable_range(store: FileStore, requested: ByteRange):
    info = await store.put(PNG, "image/png")
    with pytest.raises(errors.RangeNotSatisfiable) as caught:
        await store.open(info.file_id, requested)
    assert caught.value.headers == {"Content-Range": f"bytes */{len(PNG)}"}


async def test_delete(store: FileStore):
    info = await store.put(PNG, "image/png")
    await store.delete(info.file_id)
    with pytest.raises(errors.NotFound):
        await store.head(info.file_id)
    with pytest.raises(errors.NotFound):
        await store.open(info.file_id)
    await store.delete(info.file_id)  # again: not an error


@pytest.mark.parametrize(
    "file_id",
    [
        "file_0123456789abcdefABCDEF.png",  # well formed, never stored
        "../../etc/passwd",
        "file_0123456789abcdefABCDEF.html",
        ".probe-0123",
        "",
    ],
)
async def test_missing_files_are_not_found(store: FileStore, file_id: str):
    with pytest.raises(errors.NotFound):
        await store.head(file_id)
    with pytest.raises(errors.NotFound):
        await store.open(file_id)
    with pytest.raises(errors.NotFound):
        await store.open(file_id, ByteRange(first=0, last=1))
    await store.delete(file_id)


async def test_concurrent_writes_of_the_same_content(store: FileStore):
    infos = await asyncio.gather(*(store.put(PNG, "image/png") for _ in range(20)))
    assert len({info.file_id for info in infos}) == 20
    bodies = await asyncio.gather(*(store.open(info.file_id) for info in infos))
    contents = await asyncio.gather(*(read_all(body) for body in bodies))
    assert all(content == PNG for content in contents)


async def test_list_and_sweep_by_age(store: FileStore):
    kept = await store.put(PNG, "image/png")
    listed = {info.file_id: info for info in [i async for i in store.list_files()]}
    assert set(listed) == {kept.file_id}  # the start-up probe left nothing behind
    assert listed[kept.file_id].size == len(PNG)
    modified = listed[kept.file_id].last_modified

    assert await store.sweep(modified - dt.timedelta(hours=1)) == 0
    assert (await store.head(kept.file_id)).size == len(PNG)

    other = await store.put(b"x", "image/png")
    # Everything written up to a minute from now counts as past the retention.
    assert await store.sweep(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)) == 2
    for info in (kept, other):
        with pytest.raises(errors.NotFound):
            await store.head(info.file_id)
    assert [i async for i in store.list_files()] == []
    assert await store.sweep(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)) == 0


async def test_operations_are_counted(store: FileStore, metrics: Metrics):
    info = await store.put(PNG, "image/png")
    await read_all(await store.open(info.file_id))
    with pytest.raises(errors.NotFound):
        await store.head("file_0123456789abcdefABCDEF.png")
    await store.sweep(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    text = metrics.render().decode()
    assert metric_total(text, "gateway_storage_operations_total", op="put", outcome="ok") == 1
    assert metric_total(text, "gateway_storage_operations_total", op="get", outcome="ok") == 1
    assert metric_total(text, "gateway_storage_operations_total", outcome="not_found") >= 1
    assert metric_total(text, "gateway_storage_operation_duration_seconds_count", op="put") == 1
    assert "gateway_storage_stored_bytes_total " + f"{float(len(PNG))}" in text
    assert "gateway_storage_swept_objects_total 1.0" in text
