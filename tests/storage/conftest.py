"""Fixtures for the storage tests: every kind of store for real, S3 as a moto server.

The S3 store talks HTTP to a real S3-compatible server: ``moto`` (``moto[server]``),
started as a subprocess on a free port, like the private redis-server in
``tests/conftest.py``. One is shared by the session (each test gets a bucket of its
own); a test that stops the server starts its own (:func:`private_moto`).
"""

from __future__ import annotations

import http.client
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import Metrics
from gateway.storage import FileStore, StorageConfig, open_store
from tests.support.processes import free_port

SECRET = "storage-test-signing-secret-0123456789abcdef"
OLD_SECRET = "storage-test-old-signing-secret-0123456789"
#: Every kind of store the contract runs against; ``file-streamed`` is the file store
#: read through obstore instead of sendfile.
KINDS = ("file", "file-streamed", "memory", "s3")


@dataclass
class MotoServer:
    """An S3-compatible server of the tests' own, which they may stop and start."""

    port: int
    process: subprocess.Popen[bytes] | None = None
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:  # until it answers (it takes a second or two to import)
            try:
                if self._call("GET", "/") == 200:
                    return
            except OSError:
                self.process.poll()
                assert self.process.returncode is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def new_bucket(self) -> str:
        name = f"images-{secrets.token_hex(4)}"
        assert self._call("PUT", f"/{name}") == 200
        return name

    def _call(self, method: str, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path)
            return connection.getresponse().status
        finally:
            connection.close()

    def config(self, bucket: str, **extra: Any) -> StorageConfig:
        """A storage config for ``bucket`` on this server (under a prefix)."""
        return StorageConfig(
            url=f"s3://{bucket}/images",
            options={
                "endpoint": self.endpoint,
                "region": "us-east-1",
                "access_key_id": "testing",
                "secret_access_key_env": "STORAGE_TEST_S3_SECRET",
            },
            signing_secrets=(SECRET,),
            **extra,
        )


#: What the S3 configs' ``secret_access_key_env`` reads.
S3_ENV = {"STORAGE_TEST_S3_SECRET": "testing-secret"}


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port())
    server.start()
    yield server
    server.stop()


def store_config(kind: str, tmp_path: Path, moto: MotoServer | None, **extra: Any) -> StorageConfig:
    if kind == "s3":
        assert moto is not None
        return moto.config(moto.new_bucket(), **extra)
    if kind == "memory":
        return StorageConfig(url="memory://", signing_secrets=(SECRET,), **extra)
    return StorageConfig(url=f"file://{tmp_path}/images", signing_secrets=(SECRET,), **extra)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, metrics: Metrics
) -> AsyncIterator[FileStore]:
    """A real, empty store of each kind, checked writable as at start-up."""
    moto = request.getfixturevalue("moto") if kind == "s3" else None
    config = store_config(kind, tmp_path, moto)
    opened = open_store(config, S3_ENV, metrics=metrics, sendfile=kind != "file-streamed")
    await opened.check_writable()
    yield opened
    await opened.close()
