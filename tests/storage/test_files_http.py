"""GET/HEAD /v1/files/{file_id} on a tiny inline app with the gateway's error middleware:
what a client following a link sees, against every kind of store."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import errors
from gateway.http.files import add_file_routes
from gateway.http.middlewares import request_context_middleware
from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.storage import STORAGE, Storage, StorageConfig, open_storage
from tests.storage.conftest import OLD_SECRET, S3_ENV, SECRET, MotoServer, store_config
from tests.support.config import KEY_PREFIX
from tests.support.http import expect_error

MIB = os.urandom(1024 * 1024)
T0 = 1_800_000_000.0


class Clock:
    """Wall-clock seconds the test sets."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Files:
    client: TestClient[web.Request, web.Application]
    storage: Storage
    clock: Clock

    async def save(self, data: bytes = MIB, content_type: str = "image/png") -> str:
        """Store ``data``; the path and query of its link."""
        info = await self.storage.store.put(data, content_type)
        return self.storage.links.sign_url(info.file_id, self.clock(), "")

    async def get(self, link: str, **headers: str) -> aiohttp.ClientResponse:
        return await self.client.get(link, headers=headers)


MakeFiles = Callable[..., Awaitable[Files]]


@pytest.fixture
async def make_files(tmp_path: Path) -> AsyncIterator[MakeFiles]:
    """``await make_files(config)``: the file route on a real socket, clock pinned."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(config: StorageConfig, **kwargs: object) -> Files:
        clock = Clock()
        storage = await open_storage(config, environ=S3_ENV, clock=clock, **kwargs)  # type: ignore[arg-type]
        app = web.Application(
            middlewares=[request_context_middleware(Metrics(), AccessLog(), key_prefix=KEY_PREFIX)]
        )
        app[STORAGE] = storage

        async def link(request: web.Request) -> web.Response:
            made = await storage.links.link(
                request.match_info["file_id"], now=clock(), request=request
            )
            return web.Response(text=made.url)

        app.router.add_get("/link/{file_id}", link)
        add_file_routes(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Files(client, storage, clock)

    yield make
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def files(
    make_files: MakeFiles, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Files:
    moto = request.getfixturevalue("moto") if kind == "s3" else None
    return await make_files(store_config(kind, tmp_path, moto))


@pytest.fixture
async def file_store(make_files: MakeFiles, tmp_path: Path) -> Files:
    return await make_files(store_config("file", tmp_path, None))


def with_query(link: str, **changes: str | None) -> str:
    path, _, query = link.partition("?")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return path + "?" + "&".join(f"{k}={v}" for k, v in params.items())


# -- a valid link ---------------------------------------------------------------------


async def test_valid_link_serves_the_exact_bytes(files: Files):
    link = await files.save()
    response = await files.get(link)
    assert response.status == 200
    assert await response.read() == MIB
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Length"] == str(len(MIB))
    assert response.headers["Cache-Control"] == "private, max-age=3600"
    assert response.headers["ETag"] == f'"{link.split("/")[-1].split("?")[0]}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-ID"]
    assert "Authorization" not in response.request_info.headers  # no key needed

    files.clock.now += 600
    response = await files.get(link)
    assert response.headers["Cache-Control"] == "private, max-age=3000"
    assert await response.read() == MIB


async def test_head(files: Files):
    link = await files.save()
    response = await files.client.head(link)
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(MIB))
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["ETag"]
    assert await response.read() == b""


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=100-65635", 100, 65636),
        ("bytes=1048000-", 1048000, 1048576),
        ("bytes=-10", 1048566, 1048576),
        ("bytes=1048000-9999999", 1048000, 1048576),
        ("bytes=0-", 0, 1048576),
    ],
)
async def test_range(files: Files, header: str, start: int, stop: int):
    link = await files.save()
    response = await files.get(link, Range=header)
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(MIB)}"
    assert response.headers["Content-Length"] == str(stop - start)
    assert await response.read() == MIB[start:stop]

    response = await files.client.head(link, headers={"Range": header})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(MIB)}"


@pytest.mark.parametrize("header", ["bytes=1048576-", "bytes=2000000-2000001", "bytes=-0"])
async def test_unsatisfiable_range_is_416(files: Files, header: str):
    link = await files.save()
    response = await files.get(link, Range=header)
    await expect_error(response, 416, "range_not_satisfiable")
    assert response.headers["Content-Range"] == f"bytes */{len(MIB)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-2", "bytes=x-y", "pages=1-2"])
async def test_ranges_it_cannot_honour_get_the_whole_file(files: Files, header: str):
    link = await files.save()
    response = await files.get(link, Range=header)
    assert response.status == 200
    assert await response.read() == MIB


async def test_if_range_for_another_version_gets_the_whole_file(file_store: Files):
    link = await file_store.save()
    response = await file_store.get(link, Range="bytes=0-9", **{"If-Range": '"other"'})
    assert response.status == 200
    assert await response.read() == MIB
    etag = response.headers["ETag"]
    response = await file_store.get(link, Range="bytes=0-9", **{"If-Range": etag})
    assert response.status == 206
    assert await response.read() == MIB[:10]


async def test_etag_and_304(files: Files):
    link = await files.save(b"tiny")
    first = await files.get(link)
    etag = first.headers["ETag"]
    response = await files.get(link, **{"If-None-Match": etag})
    assert response.status == 304
    assert await response.read() == b""
    assert response.headers["ETag"] == etag
    response = await files.get(link, **{"If-None-Match": f'"x", W/{etag}'})
    assert response.status == 304
    response = await files.get(link, **{"If-None-Match": '"something-else"'})
    assert response.status == 200
    assert await response.read() == b"tiny"


# -- links that do not work -----------------------------------------------------------


async def test_each_part_of_a_link_tampered_is_invalid_signature(files: Files):
    link = await files.save(b"x")
    other = await files.save(b"y")
    other_id = other.split("?")[0].rsplit("/", 1)[1]
    path, _, query = link.partition("?")
    params = parse_qs(query)
    expires, signature = params["expires"][0], params["signature"][0]
    flipped = ("A" if signature[5] != "A" else "B").join((signature[:5], signature[6:]))
    tampered = [
        f"/v1/files/{other_id}?{query}",  # another file's id
        f"{path}?expires={int(expires) + 1}&signature={signature}",  # a longer life
        f"{path}?expires={int(expires) - 1}&signature={signature}",
        with_query(link, signature=flipped),
        with_query(link, signature=signature[:-1]),
        with_query(link, signature=signature + "="),
        with_query(link, signature=None),
        with_query(link, expires=None),
        with_query(link, expires="-5"),
        with_query(link, expires="1e12"),
        path,
    ]
    for bad in tampered:
        response = await files.get(bad)
        await expect_error(response, 403, "invalid_signature")
        assert (await files.client.head(bad)).status == 403
    assert (await files.get(link)).status == 200


async def test_a_link_signed_with_another_secret_is_refused(make_files: MakeFiles, tmp_path: Path):
    stranger = await make_files(
        StorageConfig(url=f"file://{tmp_path}/images", signing_secrets=("z" * 40,))
    )
    link = await stranger.save(b"x")
    mine = await make_files(store_config("file", tmp_path, None))
    await expect_error(await mine.get(link), 403, "invalid_signature")


async def test_expired_link(files: Files):
    link = await files.save(b"x")
    files.clock.now += 3599
    assert (await files.get(link)).status == 200
    files.clock.now += 1
    error = await expect_error(await files.get(link), 403, "url_expired")
    assert "expired" in error["message"]
    assert (await files.client.head(link)).status == 403


async def test_swept_file_is_404(files: Files):
    link = await files.save(b"x")
    etag = (await files.get(link)).headers["ETag"]
    swept = await files.storage.store.sweep(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    assert swept == 1
    await expect_error(await files.get(link), 404, "not_found")
    await expect_error(await files.get(link, **{"If-None-Match": etag}), 404, "not_found")
    assert (await files.client.head(link)).status == 404


async def test_a_signed_link_to_an_id_never_stored_is_404(file_store: Files):
    file_id = "file_0123456789abcdefABCDEF.png"
    link = file_store.storage.links.sign_url(file_id, file_store.clock(), "")
    await expect_error(await file_store.get(link), 404, "not_found")


async def test_rotated_secret_still_verifies(make_files: MakeFiles, tmp_path: Path):
    before = await make_files(
        StorageConfig(url=f"file://{tmp_path}/images", signing_secrets=(OLD_SECRET,))
    )
    old_link = await before.save()
    after = await make_files(
        StorageConfig(url=f"file://{tmp_path}/images", signing_secrets=(SECRET, OLD_SECRET))
    )
    response = await after.get(old_link)
    assert response.status == 200
    assert await response.read() == MIB
    new_link = await after.save(b"new")
    assert (
        parse_qs(new_link.split("?")[1])["signature"]
        != parse_qs(old_link.split("?")[1])["signature"]
    )
    assert await (await after.get(new_link)).read() == b"new"
    await expect_error(await before.get(new_link), 403, "invalid_signature")


# -- link building ------------------------------------------------------------------------


async def test_links_use_the_public_base_url(make_files: MakeFiles, tmp_path: Path):
    files = await make_files(
        StorageConfig(
            url=f"file://{tmp_path}/images",
            signing_secrets=(SECRET,),
            public_base_url="https://img.example.com/gw",
            url_ttl_seconds=60,
        )
    )
    saved = await files.storage.save(b"x", "image/webp")
    url = urlsplit(saved.url)
    assert (url.scheme, url.netloc) == ("https", "img.example.com")
    assert url.path == f"/gw/v1/files/{saved.file_id}"
    assert saved.file_id.endswith(".webp")
    assert parse_qs(url.query)["expires"] == [str(int(T0) + 60)]
    assert saved.expires_at == int(T0) + 60
    response = await files.get(f"/v1/files/{saved.file_id}?{url.query}")
    assert response.headers["Content-Type"] == "image/webp"
    assert response.headers["Cache-Control"] == "private, max-age=60"


async def test_links_use_the_request_host_and_trusted_proxies(
    make_files: MakeFiles, tmp_path: Path
):
    plain = await make_files(store_config("file", tmp_path, None))
    origin = str(plain.client.make_url("")).rstrip("/")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    response = await plain.client.get("/link/file_0123456789abcdefABCDEF.png", headers=forwarded)
    url = await response.text()
    assert url.startswith(f"{origin}/v1/files/file_0123456789abcdefABCDEF.png?expires=")

    proxied = await make_files(store_config("file", tmp_path, None), trusted_proxies=["127.0.0.1"])
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "a.example, img.example.com"}
    response = await proxied.client.get("/link/file_0123456789abcdefABCDEF.png", headers=forwarded)
    assert (await response.text()).startswith("https://img.example.com/v1/files/")

    response = await proxied.client.get(
        "/link/file_0123456789abcdefABCDEF.png", headers={"X-Forwarded-Host": "a b/c"}
    )
    await expect_error(response, 400, "invalid_request")


# -- S3: presigned links, and the store going away -------------------------------------------


async def test_presigned_links_are_the_stores_own(make_files: MakeFiles, moto: MotoServer):
    files = await make_files(moto.config(moto.new_bucket(), presign=True))
    saved = await files.storage.save(MIB, "image/png")
    assert saved.url.startswith(f"{moto.endpoint}/")
    assert "X-Amz-Signature=" in saved.url
    assert "X-Amz-Expires=3600" in saved.url
    async with aiohttp.ClientSession() as session, session.get(saved.url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        assert await response.read() == MIB


async def test_s3_stopped_mid_request_is_503(make_files: MakeFiles, private_moto: MotoServer):
    files = await make_files(private_moto.config(private_moto.new_bucket()))
    link = await files.save()
    assert await (await files.get(link)).read() == MIB
    private_moto.stop()
    await expect_error(await files.get(link), 503, "storage_unavailable")
    assert (await files.client.head(link)).status == 503
    await expect_error(await files.get(link, Range="bytes=0-9"), 503, "storage_unavailable")
    with pytest.raises(errors.StorageUnavailable):
        await files.storage.save(b"x", "image/png")


async def test_s3_failing_mid_body_cuts_the_body_short(
    make_files: MakeFiles, private_moto: MotoServer, caplog: pytest.LogCaptureFixture
):
    """Once the status line is out, a failing store can only end the body early: the
    client sees a short body (never a 200 that looks complete), and the next request
    gets its 503."""
    files = await make_files(private_moto.config(private_moto.new_bucket()))
    big = os.urandom(32 * 1024 * 1024)  # more than the sockets between can hold
    link = await files.save(big)
    response = await files.get(link)
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(big))
    assert await response.content.readexactly(1024 * 1024) == big[: 1024 * 1024]
    private_moto.stop()
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert "stopped mid-body" in caplog.text
    await expect_error(await files.get(link), 503, "storage_unavailable")
