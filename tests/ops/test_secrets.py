"""No secret appears in the logs, in an error message, in ``/metrics`` or upstream.

Not an API key, password, access token, admin token, JWT secret, upstream key or
database/Redis password: under normal use and under hostile input, with the log at DEBUG;
nor the key in a malformed request whose bytes aiohttp would echo.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import signal
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from multidict import CIMultiDict

from gateway.keys.format import RANDOM_LENGTH, generate_key
from tests.support.config import KEY_PREFIX, merge
from tests.support.gateway import MakeKey
from tests.support.http import bearer
from tests.support.processes import Served, free_port, running_gateway
from tests.support.raw_http import raw_request
from tests.support.redis import PrivateRedis
from tests.support.upstreams import FakeUpstream, upstream_config


@pytest.fixture
def secured_redis() -> Iterator[PrivateRedis]:
    """A private redis-server that requires a password."""
    password = "redis-pw-" + secrets.token_hex(12)
    with tempfile.TemporaryDirectory() as directory:
        server = PrivateRedis(free_port(), directory, password=password)
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def database_url_with_password(database_url: str) -> tuple[str, str | None]:
    """The run's database URL with a password in it, if the server lets us use one.

    Postgres on a test machine usually trusts local connections and ignores the password;
    then a made-up one is enough to check that it is never shown. A URL that already has
    a password keeps it (and it must not be shown either).
    """
    parts = urllib.parse.urlsplit(database_url)
    if parts.password:
        return database_url, urllib.parse.unquote(parts.password)
    password = "db-pw-" + secrets.token_hex(12)
    user = parts.username or "postgres"
    netloc = f"{user}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    try:
        conn = await asyncpg.connect(url)
    except Exception:
        return database_url, None
    await conn.close()
    return url, password


@dataclass
class Seen:
    """What the gateway showed a client: each answer, with the secrets it may show."""

    items: list[tuple[str, str, frozenset[str]]]

    def add(self, what: str, status: int, headers: Any, body: bytes) -> None:
        head = "\n".join(f"{k}: {v}" for k, v in headers.items())
        text = f"{status}\n{head}\n\n{body.decode('utf-8', 'replace')}"
        self.items.append((what, text, frozenset()))

    def allow_last(self, secret: str) -> None:
        """The last answer is the one that hands out ``secret`` (a login, a new key)."""
        what, text, _ = self.items[-1]
        self.items[-1] = (what, text, frozenset({secret}))


async def request(
    session: aiohttp.ClientSession,
    seen: Seen,
    method: str,
    url: str,
    **kwargs: Any,
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        body = await response.read()
        seen.add(f"{method} {url}", response.status, response.headers, body)
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        return response.status, data


@pytest.mark.slow
async def test_no_secret_appears_in_logs_errors_metrics_or_upstream(
    tmp_path: Path,
    raw_config: dict[str, Any],
    database_url: str,
    secured_redis: PrivateRedis,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
):
    upstream_secret = "upstream-sk-" + secrets.token_urlsafe(24)
    jwt_secret = "jwt-secret-" + secrets.token_urlsafe(32)
    admin_token = "admin-token-" + secrets.token_urlsafe(24)
    password = "Pw-" + secrets.token_urlsafe(18)
    email = f"secret-{uuid.uuid4().hex[:12]}@example.com"
    db_url, db_password = await database_url_with_password(database_url)
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", upstream_secret)  # clean_env() passes it on
    extra = merge(
        upstream_config(fake_upstream),
        {
            "backends": {"remote": {"api_key_env": "GW_TEST_UPSTREAM_KEY", "retries": 0}},
            "logging": {"level": "DEBUG"},
            "admin": {"token": admin_token},
            "auth": {
                "jwt_secrets": [jwt_secret],
                "register_per_minute_per_ip": 100,
                "login_per_minute_per_ip": 100,
            },
            "database": {"url": db_url},
            "redis": {"url": secured_redis.url},
            "server": {"max_body_bytes": 65536},
        },
    )
    seen = Seen([])
    keys: list[str] = []
    async with running_gateway(tmp_path, raw_config, extra) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        log_path = tmp_path / f"gateway-{port}.log"
        async with aiohttp.ClientSession() as s:
            # -- normal use: register, log in, keys, generation, rotation, revocation.
            body = {"email": email, "password": password}
            status, user = await request(s, seen, "POST", f"{url}/v1/auth/register", json=body)
            assert status == 201
            wrong = {"email": email, "password": password + "x"}
            assert (await request(s, seen, "POST", f"{url}/v1/auth/login", json=wrong))[0] == 401
            unknown = {"email": "nobody-" + email, "password": password}
            assert (await request(s, seen, "POST", f"{url}/v1/auth/login", json=unknown))[0] == 401
            status, login = await request(s, seen, "POST", f"{url}/v1/auth/login", json=body)
            assert status == 200
            token = login["access_token"]
            seen.allow_last(token)
            auth = bearer(token)
            assert (await request(s, seen, "GET", f"{url}/v1/me", headers=auth))[0] == 200
            status, created = await request(
                s, seen, "POST", f"{url}/v1/keys", json={"name": "ci"}, headers=auth
            )
            assert status == 201
            key = created["key"]
            keys.append(key)
            seen.allow_last(key)
            assert (await request(s, seen, "GET", f"{url}/v1/keys", headers=auth))[0] == 200
            gen = {"prompt": "a lighthouse", "size": "256x256", "model": "remote"}
            status, _ = await request(
                s, seen, "POST", f"{url}/v1/images/generations", json=gen, headers=bearer(key)
            )
            assert status == 200
            assert (await request(s, seen, "GET", f"{url}/v1/models", headers=bearer(key)))[
                0
            ] == 200
            fake_upstream.mode = "fail"
            status, _ = await request(
                s, seen, "POST", f"{url}/v1/images/generations", json=gen, headers=bearer(key)
            )
            assert status == 502
            fake_upstream.mode = "ok"
            status, rotated = await request(
                s,
                seen,
                "POST",
                f"{url}/v1/keys/{created['id']}/rotate",
                json={"grace_seconds": 60},
                headers=auth,
            )
            assert status == 201
            new_key = rotated["key"]
            keys.append(new_key)
            seen.allow_last(new_key)
            status, _ = await request(
                s, seen, "POST", f"{url}/v1/generate", json=gen, headers=bearer(new_key)
            )
            assert status == 200
            status, _ = await request(s, seen, "GET", f"{url}/v1/usage", headers=auth)
            assert status == 200
            status, _ = await request(
                s, seen, "DELETE", f"{url}/v1/keys/{rotated['id']}", headers=auth
            )
            assert status == 204

            # -- operators.
            admin = bearer(admin_token)
            status, _ = await request(
                s, seen, "GET", f"{url}/admin/users", params={"email": email}, headers=admin
            )
            assert status == 200
            status, _ = await request(
                s,
                seen,
                "PATCH",
                f"{url}/admin/users/{user['id']}",
                json={"plan": "pro"},
                headers=admin,
            )
            assert status == 200
            today = dt.datetime.now(dt.UTC).date().isoformat()
            status, _ = await request(
                s, seen, "GET", f"{url}/admin/usage", params={"date": today}, headers=admin
            )
            assert status == 200

            # -- failures and hostile input, each carrying a real secret.
            near_miss = key[:-8] + ("A" if key[-8] != "A" else "B") + key[-7:]
            for headers in (
                bearer(near_miss),
                {"Authorization": f"Basic {key}"},
                {"Authorization": key},
                bearer(token),  # an access token is not an API key
                {"X-API-Key": key + " junk"},
            ):
                status, _ = await request(
                    s, seen, "POST", f"{url}/v1/images/generations", json=gen, headers=headers
                )
                assert status == 401
            for headers in (bearer(key), bearer(token + "x"), bearer(admin_token)):
                assert (await request(s, seen, "GET", f"{url}/v1/me", headers=headers))[0] == 401
            for headers in (bearer(key), bearer(token), bearer(admin_token + "x")):
                status, _ = await request(s, seen, "GET", f"{url}/admin/users", headers=headers)
                assert status == 401
            status, _ = await request(
                s, seen, "POST", f"{url}/v1/images/generations?api_key={key}", json=gen
            )
            assert status == 400
            duplicated: CIMultiDict[str] = CIMultiDict()
            duplicated.add("Authorization", f"Bearer {key}")
            duplicated.add("Authorization", f"Bearer {generate_key(KEY_PREFIX)}")
            await request(
                s, seen, "POST", f"{url}/v1/images/generations", json=gen, headers=duplicated
            )
            for raw in (
                b'{"prompt": "\xff\xfe"}',
                b"[" * 60_000,
                b'{"prompt": "p", "n": 1e308}',
                b'{"prompt": "p", "seed": ' + str(2**64).encode() + b"}",
                b"{" + b" " * 70_000 + b"}",
            ):
                status, _ = await request(
                    s,
                    seen,
                    "POST",
                    f"{url}/v1/images/generations",
                    data=raw,
                    headers={**bearer(key), "Content-Type": "application/json"},
                )
                assert status in (400, 413)
            for raw in (
                b'{"email": "x@example.com", "password": "\xff' + password.encode() + b'"}',
            ):
                status, _ = await request(s, seen, "POST", f"{url}/v1/auth/login", data=raw)
                assert status == 400
            # A body that never completes, the client gone (the 'unhandled error' path).
            head = (
                f"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
                f'{{"email": "{email}", "password": "{password}'
            ).encode()
            await raw_request(port, head, hang_up=True)
            head = (
                f"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {key}\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n"
            ).encode()
            answer = await raw_request(port, head + b"{" + b" " * 65535)
            assert answer.startswith(b"HTTP/1.1 413")
            seen.add("10 MB body", 413, {}, answer)

            status, _ = await request(s, seen, "GET", f"{url}/readyz")
            assert status == 200
            async with s.get(f"{url}/metrics") as response:
                metrics_text = await response.text()
        # A graceful stop, so that shutdown's own log lines are in the file too.
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    log_text = log_path.read_text(errors="replace")

    assert '"logger":"gateway.access"' in log_text  # the log really is the access log
    assert fake_upstream.requests, "the upstream was never called"
    upstream_auth = {r["headers"].get("Authorization") for r in fake_upstream.requests}
    assert upstream_auth == {f"Bearer {upstream_secret}"}  # the secret really was used

    secret_values = {
        "API key": keys[0],
        "API key (random part)": keys[0][len(KEY_PREFIX) : len(KEY_PREFIX) + RANDOM_LENGTH],
        "rotated API key": keys[1],
        "password": password,
        "access token": token,
        "access token signature": token.rsplit(".", 1)[1],
        "JWT secret": jwt_secret,
        "admin token": admin_token,
        "upstream key": upstream_secret,
        "Redis password": secured_redis.password,
    }
    if db_password is not None:
        secret_values["database password"] = db_password
    for name, value in secret_values.items():
        assert value not in log_text, f"the {name} is in the log"
        assert value not in metrics_text, f"the {name} is in /metrics"
        for what, text, allowed in seen.items:
            if not any(value in shown for shown in allowed):  # a part of what it may show
                assert value not in text, f"the {name} is in the answer to {what}"
        for sent in fake_upstream.requests:
            if name != "upstream key":
                assert value not in repr(sent), f"the {name} went upstream"


# -- the malformed requests whose bytes aiohttp echoes -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "template",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\x01\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\x7f\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}"
        + b"A" * 9000
        + b"\r\n\r\n",
        b"GET /v1/models?api_key={key}\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/models?api_key={key} x HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["control-char", "x-api-key-del", "over-long", "bad-url-char", "space-in-url"],
)
async def test_a_malformed_request_does_not_put_its_key_in_the_log(
    served: Served, make_key: MakeKey, template: bytes
):
    key = await make_key()
    answer = await raw_request(served.port, template.replace(b"{key}", key.key.encode()))
    assert answer.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4"))
    async with aiohttp.ClientSession() as session, session.get(f"{served.url}/healthz") as r:
        assert r.status == 200  # (aiohttp logs a parse error before it answers it)
    assert key.key not in served.log_path.read_text(errors="replace")
    assert key.key.encode() not in answer
