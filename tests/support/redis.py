"""Private redis-servers: for tests that stop, flush or lock Redis, or need a password."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

import redis

__all__ = ["PrivateRedis"]


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, which it may flush, stop and start.

    With a ``password``, the server requires it (``--requirepass``) and ``url`` carries it.
    """

    port: int
    directory: str
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test (apt-get install redis-server)"
        auth = ["--requirepass", self.password] if self.password is not None else []
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *auth,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    self.process.poll()
                    assert self.process.returncode is None, "redis-server exited"
                    time.sleep(0.025)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
