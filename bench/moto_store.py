"""Gs3's object store: a ``moto`` S3-compatible server of the benchmark's own.

``moto`` (``moto[server]``, a dev dependency) speaks the S3 wire protocol; the tests
start it the same way (``tests/storage/conftest.py``). Each Gs3 window gets a fresh
server on a free port, a bucket, and the gateway's ``storage:`` pointing at it, so the
objects of one window (kept by moto in temporary files under the bench's work
directory, not in its memory) never weigh on the next. moto is a Python server: what
Gs3 measures is moto as much as the gateway, so its CPU is reported on its own.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from bench.procs import Child, Children, free_port, python_command

__all__ = ["MotoStore"]

#: The environment variable the gateway reads the store's secret key from.
SECRET_ENV = "BENCH_S3_SECRET"  # noqa: S105 - a variable's name
#: Objects above this size go to moto's temporary files, not its memory (a window
#: stores thousands of megabyte images).
KEY_BUFFER_BYTES = 64 * 1024


class MotoStore:
    """One moto server with one bucket; :meth:`stop` ends it."""

    def __init__(self, children: Children, workdir: Path, name: str) -> None:
        self.children = children
        self.bucket = f"images-{secrets.token_hex(4)}"
        self.port = free_port()
        self.tmp = workdir / f"{name}-objects"
        self.tmp.mkdir(exist_ok=True)
        env = dict(os.environ)
        env["TMPDIR"] = str(self.tmp)
        env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(KEY_BUFFER_BYTES)
        argv = python_command("-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port))
        self.child: Child = children.start(name, argv, workdir / f"{name}.log", env=env)
        try:
            self._wait()
            status = self._call("PUT", f"/{self.bucket}")
            if status != 200:
                raise RuntimeError(f"moto answered {status} to creating the bucket")
        except BaseException:
            self.stop()
            raise

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.pid

    def storage(self) -> dict[str, Any]:
        """The gateway's ``storage:`` section for this bucket (under a prefix)."""
        return {
            "url": f"s3://{self.bucket}/images",
            "options": {
                "endpoint": self.endpoint,
                "region": "us-east-1",
                "access_key_id": "bench",
                "secret_access_key_env": SECRET_ENV,
            },
        }

    @staticmethod
    def env() -> dict[str, str]:
        """What the gateway's environment needs for :meth:`storage`."""
        return {SECRET_ENV: "bench-secret"}  # moto takes any credentials

    def stop(self) -> None:
        self.children.stop(self.child)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _wait(self, timeout: float = 60.0) -> None:
        """Until moto answers (importing it takes a second or two)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._call("GET", "/") == 200:
                    return
            except OSError:
                pass
            if not self.child.alive():
                raise RuntimeError(f"moto server exited:\n{self.child.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer within {timeout:g} s")
            time.sleep(0.05)

    def _call(self, method: str, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()
