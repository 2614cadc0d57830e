"""Checks on what the gateway answers: the documented error shape, credentials, times."""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["ANY", "bearer", "expect_error", "parse_time"]

ANY = object()  # expect_error: do not check the param


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


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


def parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed
