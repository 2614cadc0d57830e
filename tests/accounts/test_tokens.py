"""Access tokens cannot be forged: only HS256 under a configured secret, with a valid
time window, for a real user.

The forgeries are made as an attacker would make them, RS256 signatures and a published
public key included (with the ``cryptography`` package).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key

from gateway.accounts.tokens import TokenIssuer, key_id_of
from tests.support.config import JWT_SECRET
from tests.support.gateway import Gateway, MakeKey
from tests.support.http import ANY, bearer, expect_error


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signing_input(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    return f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}".encode()


def hs_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes, digest: Any) -> str:
    data = signing_input(header, claims)
    return f"{data.decode()}.{b64url(hmac.new(secret, data, digest).digest())}"


@dataclass(frozen=True)
class RsaKey:
    """An attacker's RSA key pair (``cryptography``'s)."""

    private: RSAPrivateKey

    @property
    def n(self) -> int:
        return self.private.public_key().public_numbers().n

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo, PEM: what an attacker would find published."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign_rs256(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256."""
        return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture(scope="module")
def rsa_key() -> RsaKey:
    return RsaKey(generate_private_key(public_exponent=65537, key_size=2048))


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
