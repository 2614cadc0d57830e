"""Helpers shared by the tests: error-shape checks, waiting on events, accounts."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import Gateway

__all__ = [
    "ANY",
    "PASSWORD",
    "RELAXED",
    "Account",
    "eventually",
    "expect_error",
    "metric_total",
    "new_account",
    "new_key",
    "parse_time",
    "within_a_second",
]

PASSWORD = "correct horse battery staple"
#: Per-IP budgets high enough that only the brute-force tests ever meet them.
RELAXED = {"auth": {"register_per_minute_per_ip": 10_000, "login_per_minute_per_ip": 10_000}}
ANY = object()  # expect_error: do not check the param


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of metric ``name``'s samples in ``/metrics`` text with these label values."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def expect_error(
    response: Any, status: int, code: str, param: object = None
) -> dict[str, Any]:
    """The response is the documented JSON error: status, code, param, a message."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    if param is not ANY:
        assert error["param"] == param
    assert isinstance(error["message"], str)
    assert error["message"]
    assert "Traceback" not in error["message"]
    assert response.headers["X-Request-ID"]
    return error


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 3.0) -> float:
    """Poll ``check`` until it returns True; the seconds that took.

    Fails with its last answer after ``timeout`` seconds.
    """
    started = time.monotonic()
    while True:
        outcome = await check()
        if outcome is True:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"not observed within {timeout} s; last: {outcome!r}")
        await asyncio.sleep(0.02)


async def within_a_second(*checks: Callable[[], Awaitable[object]]) -> None:
    """Wait for every check; all of them must have come true within 1 s of the call."""
    started = time.monotonic()
    for check in checks:
        await eventually(check)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the change took {elapsed:.2f} s to be seen"


@dataclass
class Account:
    id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_account(gateway: Gateway) -> Account:
    """A registered, logged-in user."""
    email = f"user-{uuid.uuid4().hex}@example.com"
    body = {"email": email, "password": PASSWORD}
    response = await gateway.client.post("/v1/auth/register", json=body)
    assert response.status == 201, await response.text()
    user_id = (await response.json())["id"]
    response = await gateway.client.post("/v1/auth/login", json=body)
    assert response.status == 200, await response.text()
    return Account(user_id, email, (await response.json())["access_token"])


async def new_key(gateway: Gateway, account: Account, **body: Any) -> dict[str, Any]:
    """A key created through the API (the whole key is in ``["key"]``)."""
    body.setdefault("name", "test key")
    response = await gateway.client.post("/v1/keys", json=body, headers=account.headers)
    assert response.status == 201, await response.text()
    key: dict[str, Any] = await response.json()
    return key


def parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed
