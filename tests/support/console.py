"""A console user without a browser: forms posted with the page's CSRF token.

The gateway must run in development mode for these (``make_app(dev=True)``): outside it
the session cookie is ``Secure``, and a client over plain HTTP keeps it to itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support.gateway import Gateway

__all__ = ["ConsoleUser", "csrf_of", "shown_key"]

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
_KEY = re.compile(r'id="new-key" class="secret" type="text" readonly value="([^"]+)"')


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match is not None, page
    return match.group(1)


def shown_key(page: str) -> str:
    match = _KEY.search(page)
    assert match is not None, page
    return match.group(1)


@dataclass
class ConsoleUser:
    """A client of one gateway's console, with a cookie jar of its own (``close()`` it)."""

    gateway: Gateway
    session: aiohttp.ClientSession = field(init=False)

    def __post_init__(self) -> None:
        self.session = aiohttp.ClientSession(
            base_url=str(self.gateway.client.make_url("/")),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.session.get(path, allow_redirects=False, **kwargs) as response:
            return response.status, await response.text()

    async def submit(
        self, page: str, action: str, fields: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """Post ``fields`` to ``action`` as a form of ``page`` would (its CSRF token)."""
        _, text = await self.get(page)
        headers = {"Origin": str(self.gateway.client.make_url("")).rstrip("/")}
        headers.update(kwargs.pop("headers", {}))
        response = await self.session.post(
            action,
            data={"csrf": csrf_of(text), **(fields or {})},
            headers=headers,
            allow_redirects=False,
            **kwargs,
        )
        await response.read()  # released, and its text still readable
        return response
