"""Users registered and logged in through the API, and keys they create with it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tests.support.gateway import Gateway

__all__ = ["PASSWORD", "RELAXED", "Account", "new_account", "new_key"]

PASSWORD = "correct horse battery staple"
#: Per-IP budgets high enough that only the brute-force tests ever meet them.
RELAXED = {"auth": {"register_per_minute_per_ip": 10_000, "login_per_minute_per_ip": 10_000}}


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
