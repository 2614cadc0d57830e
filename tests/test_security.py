"""Security properties: secrets stay secret, tokens cannot be forged, nothing leaks.

* No API key, password, access token, admin token, JWT secret, upstream key or
  database/Redis password appears in the logs (at DEBUG), in an error message, in
  ``/metrics`` or upstream, under normal use and under hostile input.
* Access tokens: only HS256 under a configured secret, with a valid time window.
* Login takes as long for an unknown email as for a wrong password.
* Keys are found by their hash only; SQL is built only with parameters.
* Every response says ``nosniff``, names no server version, and has no CORS headers.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import collections
import contextlib
import datetime as dt
import hashlib
import hmac
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis
import redis.asyncio
from aiohttp import web
from multidict import CIMultiDict

from gateway.accounts.passwords import PasswordHasher
from gateway.accounts.tokens import TokenIssuer, key_id_of
from gateway.backends.local import render_png
from gateway.db.keys import KeyRow
from gateway.db.users import create_user
from gateway.keys.cache import PostgresKeyStore
from gateway.keys.format import RANDOM_LENGTH, generate_key, hash_key
from tests.conftest import (
    JWT_SECRET,
    KEY_PREFIX,
    REDIS_URL,
    FakeUpstream,
    Gateway,
    MakeGateway,
    MakeKey,
    PrivateRedis,
    base_raw_config,
    free_port,
    merge,
    serve_images_endpoint,
    upstream_config,
)
from tests.processes import running_gateway
from tests.support import ANY, RELAXED, expect_error

ROOT = Path(__file__).resolve().parent.parent
SANE_SERVER = re.compile(r"(?i)aiohttp|python|uvloop|\d+\.\d+")


# ==================================================================================
# Secrets never appear in logs, error messages, /metrics or upstream requests
# ==================================================================================


@dataclass
class SecuredRedis:
    """A private redis-server that requires a password."""

    port: int
    password: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


@pytest.fixture
def secured_redis() -> Iterator[SecuredRedis]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed for this test (apt-get install redis-server)"
    password = "redis-pw-" + secrets.token_hex(12)
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port, password=password, socket_connect_timeout=0.2)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    assert process.poll() is None, "redis-server exited"
                    time.sleep(0.025)
            yield SecuredRedis(port, password, process)
        finally:
            client.close()
            process.terminate()
            process.wait(10)


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


async def raw_request(port: int, data: bytes, *, hang_up: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; the first response, head and body, as bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if hang_up:
            return b""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            return head + await asyncio.wait_for(reader.read(), 10)
        return head + await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
    finally:
        writer.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
async def test_no_secret_appears_in_logs_errors_metrics_or_upstream(
    tmp_path: Path,
    raw_config: dict[str, Any],
    database_url: str,
    secured_redis: SecuredRedis,
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


# -- the malformed requests whose bytes aiohttp echoes ----------------------------------


def private_prefix(redis_prefix: str) -> str:
    """A Redis namespace inside the run's: this process's per-IP budgets are its own."""
    return f"{redis_prefix}{uuid.uuid4().hex[:10]}:"


@dataclass
class Served:
    url: str
    port: int
    log_path: Path


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_prefix: str
) -> AsyncIterator[Served]:
    raw = base_raw_config(database_url, REDIS_URL, redis_prefix)
    extra = merge(
        RELAXED,
        {"logging": {"level": "DEBUG"}, "redis": {"key_prefix": private_prefix(redis_prefix)}},
    )
    directory = tmp_path_factory.mktemp("security")
    async with running_gateway(directory, raw, extra) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        yield Served(url, port, directory / f"gateway-{port}.log")


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


# ==================================================================================
# Access tokens
# ==================================================================================


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signing_input(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    return f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}".encode()


def hs_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes, digest: Any) -> str:
    data = signing_input(header, claims)
    return f"{data.decode()}.{b64url(hmac.new(secret, data, digest).digest())}"


@dataclass(frozen=True)
class RsaKey:
    n: int
    e: int
    d: int

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo, PEM: what an attacker would find published."""
        rsa_public = _der(0x30, _der_int(self.n) + _der_int(self.e))
        algorithm = _der(0x30, bytes.fromhex("06092a864886f70d010101") + b"\x05\x00")
        info = _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_public))
        body = base64.encodebytes(info).decode().replace("\n", "")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return (
            "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"
        ).encode()

    def sign_rs256(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256."""
        size = (self.n.bit_length() + 7) // 8
        digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
        digest_info += hashlib.sha256(data).digest()
        encoded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
        signature = pow(int.from_bytes(encoded, "big"), self.d, self.n)
        assert pow(signature, self.e, self.n) == int.from_bytes(encoded, "big")
        return signature.to_bytes(size, "big")


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _probable_prime(candidate: int, rng: random.Random) -> bool:
    for small in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71):
        if candidate % small == 0:
            return False
    d, s = candidate - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(24):
        x = pow(rng.randrange(2, candidate - 2), d, candidate)
        if x in (1, candidate - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, candidate)
            if x == candidate - 1:
                break
        else:
            return False
    return True


def generate_rsa_key(bits: int = 2048, seed: int = 20240601) -> RsaKey:
    """An RSA key pair in plain Python (the project does not depend on a crypto library)."""
    rng = random.Random(seed)
    e = 65537
    while True:
        primes = []
        while len(primes) < 2:
            candidate = rng.getrandbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
            if _probable_prime(candidate, rng):
                primes.append(candidate)
        p, q = primes
        phi = (p - 1) * (q - 1)
        if p != q and phi % e != 0:
            return RsaKey(p * q, e, pow(e, -1, phi))


@pytest.fixture(scope="module")
def rsa_key() -> RsaKey:
    return generate_rsa_key()


KID = key_id_of(JWT_SECRET)
HS256 = {"alg": "HS256", "typ": "JWT", "kid": KID}


def forged_token(case: str, user_id: str, rsa: RsaKey) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + 3600}
    secret = JWT_SECRET.encode()
    if case == "alg-none":
        return signing_input({"alg": "none", "typ": "JWT", "kid": KID}, claims).decode() + "."
    if case == "alg-None-with-signature":
        header = {"alg": "None", "typ": "JWT", "kid": KID}
        return hs_token(header, claims, secret, hashlib.sha256)
    if case == "rs256":
        header = {"alg": "RS256", "typ": "JWT", "kid": KID}
        data = signing_input(header, claims)
        return f"{data.decode()}.{b64url(rsa.sign_rs256(data))}"
    if case == "rs256-with-embedded-jwk":
        jwk = {"kty": "RSA", "n": b64url(rsa.n.to_bytes(256, "big")), "e": "AQAB"}
        header = {"alg": "RS256", "typ": "JWT", "kid": KID, "jwk": jwk}
        data = signing_input(header, claims)
        return f"{data.decode()}.{b64url(rsa.sign_rs256(data))}"
    if case == "hs256-keyed-with-the-public-key-pem":
        return hs_token(HS256, claims, rsa.public_pem(), hashlib.sha256)
    if case == "hs256-keyed-with-the-pem-under-its-own-kid":
        header = {**HS256, "kid": key_id_of(rsa.public_pem().decode())}
        return hs_token(header, claims, rsa.public_pem(), hashlib.sha256)
    if case == "hs512-with-the-real-secret":
        header = {"alg": "HS512", "typ": "JWT", "kid": KID}
        return hs_token(header, claims, secret, hashlib.sha512)
    if case == "expired":
        claims.update(iat=now - 7200, exp=now - 60)
    elif case == "nbf-in-the-future":
        claims["nbf"] = now + 600
    elif case == "iat-in-the-future":
        claims.update(iat=now + 600, exp=now + 4200)
    elif case == "no-exp":
        del claims["exp"]
    elif case == "no-iat":
        del claims["iat"]
    elif case == "no-sub":
        del claims["sub"]
    elif case == "sub-not-a-uuid":
        claims["sub"] = "admin"
    elif case == "sub-an-int":
        claims["sub"] = 1
    elif case == "sub-of-nobody":
        claims["sub"] = str(uuid.uuid4())
    elif case == "wrong-kid":
        return hs_token({**HS256, "kid": "0" * 16}, claims, secret, hashlib.sha256)
    elif case == "no-kid":
        return hs_token({"alg": "HS256", "typ": "JWT"}, claims, secret, hashlib.sha256)
    elif case == "kid-not-a-string":
        return hs_token({**HS256, "kid": [KID]}, claims, secret, hashlib.sha256)
    elif case == "right-kid-other-secret":
        return hs_token(HS256, claims, b"another-secret-0123456789abcdef0123", hashlib.sha256)
    elif case == "signature-stripped":
        return hs_token(HS256, claims, secret, hashlib.sha256).rsplit(".", 1)[0] + "."
    elif case == "payload-swapped":
        genuine = hs_token(HS256, claims, secret, hashlib.sha256)
        other = b64url(orjson.dumps({**claims, "sub": str(uuid.uuid4())}))
        head, _, signature = genuine.split(".")
        return f"{head}.{other}.{signature}"
    elif case != "valid":
        raise AssertionError(case)
    return hs_token(HS256, claims, secret, hashlib.sha256)


TOKEN_CASES = [
    "alg-none",
    "alg-None-with-signature",
    "rs256",
    "rs256-with-embedded-jwk",
    "hs256-keyed-with-the-public-key-pem",
    "hs256-keyed-with-the-pem-under-its-own-kid",
    "hs512-with-the-real-secret",
    "expired",
    "nbf-in-the-future",
    "iat-in-the-future",
    "no-exp",
    "no-iat",
    "no-sub",
    "sub-not-a-uuid",
    "sub-an-int",
    "sub-of-nobody",
    "wrong-kid",
    "no-kid",
    "kid-not-a-string",
    "right-kid-other-secret",
    "signature-stripped",
    "payload-swapped",
]


async def test_a_token_made_like_the_gateway_makes_them_is_accepted(
    gateway: Gateway, make_key: MakeKey, rsa_key: RsaKey
):
    """The control for the cases below: the hand-made tokens are well formed."""
    key = await make_key()
    token = forged_token("valid", str(key.user_id), rsa_key)
    response = await gateway.client.get("/v1/me", headers=bearer(token))
    assert response.status == 200, await response.text()
    issued = TokenIssuer([JWT_SECRET], 3600).issue(str(key.user_id))
    assert (await gateway.client.get("/v1/me", headers=bearer(issued))).status == 200


@pytest.mark.parametrize("case", TOKEN_CASES)
async def test_forged_or_unusable_tokens_are_refused(
    gateway: Gateway, make_key: MakeKey, rsa_key: RsaKey, case: str
):
    key = await make_key()
    token = forged_token(case, str(key.user_id), rsa_key)
    for method, path in (("GET", "/v1/me"), ("GET", "/v1/keys"), ("POST", "/v1/keys")):
        response = await gateway.client.request(
            method, path, headers=bearer(token), json={"name": "x"}
        )
        await expect_error(response, 401, "invalid_token", ANY)


# ==================================================================================
# Login timing
# ==================================================================================


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


# ==================================================================================
# Fail closed without Redis
# ==================================================================================


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


# ==================================================================================
# Keys: found by hash only, stored nowhere in the clear, never sent upstream
# ==================================================================================


class CountingStore(PostgresKeyStore):
    """The real Postgres store, counting what it is asked for."""

    def __init__(self, pool: Any, lookups: collections.Counter[str]) -> None:
        super().__init__(pool)
        self.lookups = lookups

    async def fetch(self, key_hash: str) -> KeyRow | None:
        self.lookups[key_hash] += 1
        return await super().fetch(key_hash)


def one_character_off(key: str, position: int) -> str:
    index = len(KEY_PREFIX) + position
    replacement = "a" if key[index] != "a" else "b"
    return key[:index] + replacement + key[index + 1 :]


async def test_keys_are_found_by_their_hash_only(make_gateway: MakeGateway, make_key: MakeKey):
    lookups: collections.Counter[str] = collections.Counter()
    gateway = await make_gateway(key_store=lambda pool: CountingStore(pool, lookups))
    key = await make_key()
    for position in (0, 5, RANDOM_LENGTH // 2, RANDOM_LENGTH - 1):
        near_miss = one_character_off(key.key, position)
        await expect_error(await gateway.generate(near_miss), 401, "invalid_api_key", ANY)
    assert not lookups, "a key that fails its checksum still reached Postgres"

    assert (await gateway.generate(key.key)).status == 200
    assert dict(lookups) == {hash_key(key.key): 1}
    assert hash_key(key.key) == hashlib.sha256(key.key.encode()).hexdigest()

    # A well-formed key of someone else's shape is looked up under its own hash only.
    stranger = generate_key(KEY_PREFIX)
    await expect_error(await gateway.generate(stranger), 401, "invalid_api_key", ANY)
    assert dict(lookups) == {hash_key(key.key): 1, hash_key(stranger): 1}
    assert all(re.fullmatch(r"[0-9a-f]{64}", asked) for asked in lookups)


async def test_keys_are_stored_nowhere_in_the_clear(
    gateway: Gateway, make_key: MakeKey, db: Any, redis_prefix: str
):
    key = await make_key()
    assert (await gateway.generate(key.key)).status == 200  # cached in Redis and in process
    await gateway.flush()
    secret_parts = (key.key, key.key[len(KEY_PREFIX) : len(KEY_PREFIX) + RANDOM_LENGTH])
    row = await db.fetchval("SELECT row_to_json(k)::text FROM api_keys k WHERE id = $1", key.key_id)
    assert hash_key(key.key) in row
    assert not any(part in row for part in secret_parts), row
    dump = await db.fetchval(
        "SELECT coalesce(string_agg(row_to_json(t)::text, '\n'), '') FROM "
        "(SELECT * FROM users u WHERE u.id = $1) t",
        key.user_id,
    )
    assert not any(part in dump for part in secret_parts)

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        async for name in client.scan_iter(match=f"{redis_prefix}*", count=1000):
            kind = (await client.type(name)).decode()
            if kind == "string":
                values = [await client.get(name)]
            elif kind == "hash":
                mapping = await client.hgetall(name)
                values = list(mapping) + list(mapping.values())
            elif kind == "zset":
                values = await client.zrange(name, 0, -1)
            elif kind == "set":
                values = list(await client.smembers(name))
            elif kind == "list":
                values = await client.lrange(name, 0, -1)
            else:
                values = []
            for blob in [name, *values]:
                text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else str(blob)
                assert not any(part in text for part in secret_parts), name
    finally:
        await client.aclose()


CLIENT_CREDENTIAL_HEADERS = ("Cookie", "X-API-Key", "Proxy-Authorization")


async def test_client_credentials_never_reach_the_upstream(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
):
    upstream_secret = "upstream-sk-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", upstream_secret)
    config = merge(
        upstream_config(fake_upstream),
        {"backends": {"remote": {"api_key_env": "GW_TEST_UPSTREAM_KEY"}}},
    )
    gateway = await make_gateway(config)
    key = await make_key()
    token = TokenIssuer([JWT_SECRET], 3600).issue(str(key.user_id))
    body = {"prompt": "p", "size": "256x256", "model": "remote"}
    extra = {
        "Cookie": f"session={token}; api_key={key.key}",
        "Proxy-Authorization": f"Bearer {key.key}",
        "X-Forwarded-Authorization": f"Bearer {key.key}",
        "X-Access-Token": token,
    }
    for credential in ({"Authorization": f"Bearer {key.key}"}, {"X-API-Key": key.key}):
        response = await gateway.client.post(
            "/v1/images/generations", json=body, headers={**credential, **extra}
        )
        assert response.status == 200, await response.text()
    assert len(fake_upstream.requests) == 2
    for sent in fake_upstream.requests:
        headers = CIMultiDict(sent["headers"])
        assert headers["Authorization"] == f"Bearer {upstream_secret}"
        for name in (*CLIENT_CREDENTIAL_HEADERS, "X-Forwarded-Authorization", "X-Access-Token"):
            assert name not in headers
        everything = repr(sent)
        assert key.key not in everything
        assert token not in everything
        assert key.key[len(KEY_PREFIX) : len(KEY_PREFIX) + RANDOM_LENGTH] not in everything


async def test_without_an_upstream_key_no_authorization_goes_upstream(
    make_gateway: MakeGateway, make_key: MakeKey, fake_upstream: FakeUpstream
):
    gateway = await make_gateway(upstream_config(fake_upstream))
    key = await make_key()
    assert (await gateway.generate(key.key, model="remote")).status == 200
    (sent,) = fake_upstream.requests
    assert "Authorization" not in CIMultiDict(sent["headers"])
    assert key.key not in repr(sent)


@contextlib.asynccontextmanager
async def echoing_upstream() -> AsyncIterator[str]:
    """A hostile upstream that answers every call with the credentials it was sent."""

    async def handle(request: web.Request) -> web.Response:
        echoed = dict(request.headers)
        return web.json_response(
            {"error": {"message": f"bad key {echoed.get('Authorization')}", "echo": echoed}},
            status=401,
            headers={"X-Echo-Authorization": echoed.get("Authorization", "")},
        )

    async with serve_images_endpoint(handle) as url:
        yield url


async def test_an_upstream_echoing_its_key_does_not_show_it_to_the_client(
    make_gateway: MakeGateway, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch
):
    upstream_secret = "upstream-sk-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", upstream_secret)
    async with echoing_upstream() as url:
        upstream = FakeUpstream(url=url)
        config = merge(
            upstream_config(upstream),
            {"backends": {"remote": {"api_key_env": "GW_TEST_UPSTREAM_KEY", "retries": 0}}},
        )
        gateway = await make_gateway(config)
        key = await make_key()
        response = await gateway.generate(key.key, model="remote")
        await expect_error(response, 502, "upstream_error", ANY)
        assert upstream_secret not in await response.text()
        assert not any(upstream_secret in value for value in response.headers.values())


@contextlib.asynccontextmanager
async def redirecting_upstream(location: str, status: int = 307) -> AsyncIterator[str]:
    """A hostile upstream that sends every call on to ``location``."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location})

    async with serve_images_endpoint(handle) as url:
        yield url


async def redirected_call(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    target: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
) -> tuple[Any, str]:
    upstream_secret = "upstream-sk-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", upstream_secret)
    async with redirecting_upstream(f"{target.url}/images/generations", status) as url:
        config = merge(
            upstream_config(FakeUpstream(url=url)),
            {"backends": {"remote": {"api_key_env": "GW_TEST_UPSTREAM_KEY", "retries": 0}}},
        )
        gateway = await make_gateway(config)
        key = await make_key()
        response = await gateway.generate(key.key, model="remote")
        await response.read()
    return response, upstream_secret


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_an_upstream_redirect_never_carries_the_upstream_key_to_another_host(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    second_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
):
    response, upstream_secret = await redirected_call(
        make_gateway, make_key, second_upstream, monkeypatch, status
    )
    assert response.status != 500
    for sent in second_upstream.requests:
        assert upstream_secret not in repr(sent)
        assert "Authorization" not in CIMultiDict(sent["headers"])


async def test_an_upstream_redirect_is_not_followed(
    make_gateway: MakeGateway,
    make_key: MakeKey,
    second_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
):
    response, _ = await redirected_call(make_gateway, make_key, second_upstream, monkeypatch, 307)
    assert not second_upstream.requests, "the gateway followed the upstream's redirect"
    assert response.status == 502


@contextlib.asynccontextmanager
async def bloated_upstream(padding: int) -> AsyncIterator[str]:
    """A hostile upstream whose valid answer is followed by ``padding`` bytes of spaces."""
    image = base64.b64encode(render_png("p", 0, 256, 256)).decode()
    answer = orjson.dumps({"created": 0, "data": [{"b64_json": image}]}) + b" " * padding

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    async with serve_images_endpoint(handle) as url:
        yield url


async def test_an_oversized_upstream_answer_is_refused(
    make_gateway: MakeGateway, make_key: MakeKey
):
    async with bloated_upstream(64 * 1024 * 1024) as url:
        config = merge(
            upstream_config(FakeUpstream(url=url)), {"backends": {"remote": {"retries": 0}}}
        )
        gateway = await make_gateway(config)
        key = await make_key()
        response = await gateway.generate(key.key, model="remote")
        await expect_error(response, 502, "upstream_error", ANY)


# ==================================================================================
# SQL is built only with parameters (static)
# ==================================================================================

_QUERY_METHODS = frozenset(
    {"execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany", "prepare", "cursor"}
)
#: Reviewed exceptions: (file, function) -> why the statement cannot take a parameter.
_ALLOWED_BUILT_SQL = {
    ("gateway/db/pool.py", "ensure_database"): (
        "CREATE DATABASE takes an identifier, which cannot be a bind parameter; the name "
        "comes from the operator's DATABASE_URL and is quoted by doubling '\"'"
    ),
}


def _is_built_string(node: ast.expr) -> bool:
    """An f-string, ``%`` formatting, ``.format()``/``.join()``, or ``+`` with a non-literal."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return not (isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant))
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "join")
    )


def built_sql_calls(directory: Path, base: Path = ROOT) -> list[tuple[str, str, int, str]]:
    """``(file, function, line, source)`` of every query call whose SQL is built."""
    found = []
    for path in sorted(directory.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        relative = path.relative_to(base).as_posix()
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            # A name assigned a built string in the function counts as built too.
            built_names = {
                target.id
                for node in ast.walk(function)
                if isinstance(node, ast.Assign) and _is_built_string(node.value)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(function):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _QUERY_METHODS
                    and node.args
                ):
                    continue
                first = node.args[0]
                if _is_built_string(first) or (
                    isinstance(first, ast.Name) and first.id in built_names
                ):
                    found.append((relative, function.name, node.lineno, ast.unparse(first)))
    return found


def test_the_static_check_finds_built_sql(tmp_path: Path):
    """The checker itself catches each way of building a statement, and only those."""
    (tmp_path / "sample.py").write_text(
        "async def f(conn, name):\n"
        "    await conn.execute(f'DELETE FROM t WHERE name = {name}')\n"
        "    await conn.fetch('SELECT * FROM t WHERE id = %s' % name)\n"
        "    await conn.fetchrow('SELECT * FROM t WHERE id = {}'.format(name))\n"
        "    await conn.fetchval('SELECT ' + name)\n"
        "    query = f'SELECT {name}'\n"
        "    await conn.fetch(query)\n"
        "    await conn.fetch('SELECT * FROM t WHERE id = $1', name)\n"
        "    await conn.execute('SELECT 1 ' 'FROM t')\n"
        "    await pipe.execute()\n"
    )
    found = built_sql_calls(tmp_path, tmp_path)
    assert [line for _, _, line, _ in found] == [2, 3, 4, 5, 7]


def test_sql_is_built_only_with_parameters():
    found = built_sql_calls(ROOT / "gateway")
    unexpected = [call for call in found if (call[0], call[1]) not in _ALLOWED_BUILT_SQL]
    assert not unexpected, "SQL built from strings instead of parameters:\n" + "\n".join(
        f"{file}:{line} in {function}(): {source}" for file, function, line, source in unexpected
    )


# ==================================================================================
# Response headers
# ==================================================================================


def check_headers(what: str, headers: Any) -> None:
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    server = headers.get("Server")
    assert server is None or not SANE_SERVER.search(server), f"{what}: Server: {server}"
    cors = [name for name in headers if name.lower().startswith("access-control-")]
    assert not cors, f"{what}: {cors}"


async def test_every_response_says_nosniff_hides_versions_and_has_no_cors(
    app: Gateway, make_key: MakeKey
):
    key = await make_key()
    limited = await make_key(requests_per_minute=1)
    token = TokenIssuer([JWT_SECRET], 3600).issue(str(key.user_id))
    origin = {"Origin": "https://evil.example"}
    client = app.client
    gen = {"prompt": "p", "size": "256x256"}
    calls: list[tuple[str, str, dict[str, Any], int | None]] = [  # None: any status
        ("GET", "/healthz", {}, 200),
        ("HEAD", "/healthz", {}, 200),
        ("GET", "/readyz", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/v1/models", {"headers": bearer(key.key)}, 200),
        ("POST", "/v1/images/generations", {"json": gen, "headers": bearer(key.key)}, 200),
        ("POST", "/v1/images/generations", {"json": gen, "headers": bearer(limited.key)}, 200),
        ("POST", "/v1/images/generations", {"json": gen, "headers": bearer(limited.key)}, 429),
        ("GET", "/v1/me", {"headers": bearer(token)}, 200),
        ("POST", "/v1/images/generations", {"json": gen}, 401),
        ("GET", "/v1/me", {}, 401),
        ("GET", "/admin/users", {"headers": bearer("x" * 20)}, 401),
        (
            "POST",
            "/v1/images/generations",
            {"data": b"{nope", "headers": bearer(key.key)},
            400,
        ),
        ("POST", "/v1/images/generations?api_key=x", {"json": gen}, 400),
        ("GET", "/nothing/here", {}, 404),
        ("DELETE", f"/v1/keys/{uuid.uuid4()}", {"headers": bearer(token)}, 404),
        ("GET", "/v1/images/generations", {}, 405),
        ("PUT", "/healthz", {}, 405),
        (
            "POST",
            "/v1/images/generations",
            {"data": b"{" + b" " * 70_000 + b"}", "headers": bearer(key.key)},
            413,
        ),
        ("POST", "/v1/auth/login", {"json": {"email": "a@b.cd", "password": "x"}}, 401),
        ("GET", "/openapi.json", {}, None),
        ("GET", "/docs", {}, None),
        ("GET", "/docs/static/../../config.py", {}, None),
    ]
    for method, path, kwargs, status in calls:
        headers = {**origin, **kwargs.pop("headers", {})}
        response = await client.request(method, path, headers=headers, **kwargs)
        await response.read()
        assert status is None or response.status == status, (method, path, await response.text())
        assert response.status < 500, (method, path)
        check_headers(f"{method} {path} -> {status}", response.headers)


@pytest.mark.parametrize(
    "path", ["/v1/images/generations", "/v1/models", "/v1/auth/login", "/v1/keys", "/healthz"]
)
async def test_a_cors_preflight_gets_no_cors_headers(gateway: Gateway, path: str):
    response = await gateway.client.options(
        path,
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    await response.read()
    assert response.status in (404, 405)
    check_headers(f"OPTIONS {path}", response.headers)


@pytest.mark.slow
@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["bad-request-line", "100kb-header", "control-char", "content-length-and-chunked"],
)
async def test_protocol_errors_get_the_same_headers(served: Served, raw: bytes):
    answer = await raw_request(served.port, raw)
    head, _, _ = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split(" ")[1].startswith("4")
    headers = CIMultiDict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:])
    )
    check_headers(lines[0], headers)
    assert headers.get("Content-Type", "").startswith("application/json")
