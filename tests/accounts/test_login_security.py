"""Logging in gives nothing away and fails closed: an unknown email takes as long as a
wrong password, and without Redis (where the throttles live) no one logs in or registers.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from gateway.accounts.passwords import PasswordHasher
from gateway.db.users import create_user
from tests.support.gateway import MakeGateway
from tests.support.http import ANY, expect_error
from tests.support.redis import PrivateRedis


async def test_login_does_not_reveal_whether_an_email_exists_by_its_timing(
    make_app: MakeGateway, db: Any
):
    """Unknown email and wrong password: medians of 15 attempts each within 20%.

    bcrypt at cost 10 dominates a login; per-IP and per-account throttles are set out
    of the way, and every attempt names a different account.
    """
    gateway = await make_app(  # a Redis namespace of its own: 127.0.0.1's budget is not shared
        {
            "auth": {
                "bcrypt_cost": 10,
                "login_per_minute_per_ip": 10_000,
                "login_failures_before_delay": 1000,
            }
        }
    )
    attempts = 15
    stored = await PasswordHasher(10).hash("the right password")
    run = uuid.uuid4().hex[:8]
    existing = [f"timing-{run}-{i}@example.com" for i in range(attempts + 2)]
    for email in existing:
        await create_user(db, email, "free", stored)

    async def login(email: str) -> float:
        started = time.perf_counter()
        response = await gateway.client.post(
            "/v1/auth/login", json={"email": email, "password": "a wrong password"}
        )
        elapsed = time.perf_counter() - started
        await expect_error(response, 401, "invalid_credentials", ANY)
        return elapsed

    for i in range(2):  # warm up: connections, pools, the thread pool
        await login(existing[attempts + i])
        await login(f"nobody-{run}-warm{i}@example.com")
    wrong_password, unknown_email = [], []
    for i in range(attempts):  # interleaved, so drift hits both alike
        wrong_password.append(await login(existing[i]))
        unknown_email.append(await login(f"nobody-{run}-{i}@example.com"))
    a, b = statistics.median(wrong_password), statistics.median(unknown_email)
    assert abs(a - b) <= 0.2 * max(a, b), (
        f"wrong password {a * 1000:.1f} ms, unknown email {b * 1000:.1f} ms"
    )


# -- fail closed without Redis -------------------------------------------------------------


async def login_while_redis_is_down(
    make_gateway: MakeGateway, private_redis: PrivateRedis, db: Any
) -> list[Any]:
    gateway = await make_gateway({"redis": {"url": private_redis.url}})
    password = "the right password"
    email = f"closed-{uuid.uuid4().hex[:12]}@example.com"
    await create_user(db, email, "free", await PasswordHasher(4).hash(password))
    private_redis.stop()
    body = {"email": email, "password": password}
    other = {"email": f"new-{email}", "password": password}
    return [
        await gateway.client.post("/v1/auth/login", json=body),
        await gateway.client.post("/v1/auth/register", json=other),
    ]


async def test_without_redis_no_one_logs_in_or_registers(
    make_gateway: MakeGateway, private_redis: PrivateRedis, db: Any
):
    """The throttles live in Redis: without it the account endpoints refuse everyone."""
    for response in await login_while_redis_is_down(make_gateway, private_redis, db):
        assert response.status >= 500, await response.text()
        assert "access_token" not in await response.text()


async def test_without_redis_the_account_endpoints_answer_503(
    make_gateway: MakeGateway, private_redis: PrivateRedis, db: Any
):
    for response in await login_while_redis_is_down(make_gateway, private_redis, db):
        await expect_error(response, 503, "service_unavailable", ANY)
