"""Start-up (the writable check, secrets), the sweeper, and the app's cleanup context."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import errors
from gateway.config import ConfigError
from gateway.metrics import Metrics
from gateway.storage import STORAGE, StorageConfig, Sweeper, open_storage, storage_context
from tests.storage.conftest import S3_ENV, SECRET, MotoServer
from tests.support.metrics import metric_total
from tests.support.waiting import eventually

HOUR = 3600


def file_config(directory: Path, **extra: object) -> StorageConfig:
    return StorageConfig(url=f"file://{directory}", signing_secrets=(SECRET,), **extra)  # type: ignore[arg-type]


def backdate(directory: Path, file_id: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(directory / file_id, (then, then))


async def test_a_store_path_that_cannot_be_created_is_a_clear_error(tmp_path: Path):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        await open_storage(file_config(tmp_path / "a-file" / "images"))
    message = str(caught.value)
    assert message.startswith(
        f"storage.url: The file store file://{tmp_path}/a-file/images is not writable: "
        f"cannot create {tmp_path}/a-file/images:"
    )
    assert "Not a directory" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
async def test_a_read_only_store_directory_is_a_clear_error(tmp_path: Path):
    directory = tmp_path / "images"
    directory.mkdir(mode=0o500)
    with pytest.raises(ConfigError) as caught:
        await open_storage(file_config(directory))
    assert "is not writable (writing and deleting a probe object failed)" in str(caught.value)


async def test_a_missing_bucket_is_a_clear_error(moto: MotoServer):
    with pytest.raises(ConfigError) as caught:
        await open_storage(moto.config("no-such-bucket"), environ=S3_ENV)
    message = str(caught.value)
    assert message.startswith(
        "storage.url: The file store s3://no-such-bucket/images is not writable "
        "(writing and deleting a probe object failed): "
    )
    assert "testing-secret" not in message


async def test_an_unreachable_s3_server_is_a_clear_error(private_moto: MotoServer):
    config = private_moto.config(private_moto.new_bucket())
    private_moto.stop()
    with pytest.raises(ConfigError) as caught:
        await open_storage(config, environ=S3_ENV)
    assert "is not writable (writing and deleting a probe object failed)" in str(caught.value)


async def test_an_option_the_store_does_not_know(moto: MotoServer):
    config = moto.config("bucket")
    config = StorageConfig(
        url=config.url, options={**config.options, "regoin": "x"}, signing_secrets=(SECRET,)
    )
    with pytest.raises(ConfigError) as caught:
        await open_storage(config, environ=S3_ENV)
    assert str(caught.value).startswith("storage.options: ")
    assert "regoin" in str(caught.value)


async def test_sweeper_deletes_only_files_past_the_retention(tmp_path: Path):
    storage = await open_storage(file_config(tmp_path))
    old = await storage.store.put(b"old", "image/png")
    young = await storage.store.put(b"young", "image/png")
    backdate(tmp_path, old.file_id, 2 * HOUR + 60)
    backdate(tmp_path, young.file_id, 2 * HOUR - 60)
    (tmp_path / "notes.txt").write_text("not the gateway's")
    backdate(tmp_path, "notes.txt", 10 * HOUR)

    assert await Sweeper(storage.store, retention_hours=2, clock=time.time).sweep() == 1
    with pytest.raises(errors.NotFound):
        await storage.store.head(old.file_id)
    assert (await storage.store.head(young.file_id)).size == 5
    assert (tmp_path / "notes.txt").exists()

    later = Sweeper(storage.store, retention_hours=2, clock=lambda: time.time() + 120)
    assert await later.sweep() == 1
    assert [info async for info in storage.store.list_files()] == []


async def test_storage_context_opens_sweeps_and_closes(tmp_path: Path):
    setup = await open_storage(file_config(tmp_path))
    old = await setup.store.put(b"old", "image/png")
    kept = await setup.store.put(b"kept", "image/png")
    backdate(tmp_path, old.file_id, 25 * HOUR)
    metrics = Metrics()

    app = web.Application()
    app.cleanup_ctx.append(storage_context(file_config(tmp_path), metrics=metrics))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        storage = app[STORAGE]

        async def swept() -> bool:
            return not (tmp_path / old.file_id).exists()

        await eventually(swept)
        assert (await storage.store.head(kept.file_id)).size == 4
        text = metrics.render().decode()
        assert "gateway_storage_swept_objects_total 1.0" in text
        assert metric_total(text, "gateway_storage_operations_total", op="list") == 1
    finally:
        await client.close()
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "file-sweeper"]
    assert tasks == []


async def test_development_mode_generates_a_secret(tmp_path: Path):
    config = StorageConfig(url="memory://")
    with pytest.raises(ConfigError):
        storage_context(config)
    storage = await open_storage(config, dev=True)
    info = await storage.store.put(b"x", "image/png")
    link = storage.links.sign_url(info.file_id, time.time(), "http://gw")
    assert "&signature=" in link
