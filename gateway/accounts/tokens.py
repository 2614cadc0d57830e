"""Account access tokens: JWT, HS256, with a ``kid`` so secrets can be rotated.

The first configured secret signs; every configured secret verifies (picked by the
token's ``kid``). Decoding pins the algorithm list to HS256 and requires ``exp``,
``iat`` and ``sub``; anything else is :class:`~gateway.errors.InvalidToken`.

A token also carries ``gen``, its user's token generation when it was issued: a
password change or reset moves the generation on, which ends every earlier token
(:mod:`gateway.accounts.sessions`). A token without ``gen`` is of generation 0.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jwt

from gateway.errors import InvalidToken

__all__ = ["AccessClaims", "TokenIssuer", "key_id_of"]

_ALGORITHM = "HS256"


def key_id_of(secret: str) -> str:
    """A public name for a secret: enough to pick it, useless for guessing it."""
    return hashlib.sha256(b"gateway-jwt-kid:" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a valid access token says."""

    user_id: str
    generation: int
    #: Unix seconds.
    expires_at: int


class TokenIssuer:
    def __init__(
        self, secret_list: Sequence[str], ttl_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        if not secret_list:
            raise ValueError("at least one secret is required")
        self._signing = (key_id_of(secret_list[0]), secret_list[0])
        self._verifying = {key_id_of(secret): secret for secret in secret_list}
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, user_id: str, generation: int = 0) -> str:
        now = int(self._clock())
        kid, secret = self._signing
        claims = {
            "sub": user_id,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "gen": generation,
            # Two logins in one second get two tokens: logging out of one keeps the other.
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, secret, algorithm=_ALGORITHM, headers={"kid": kid})

    def verify(self, token: str) -> str:
        """The user id a valid token names; raises :class:`InvalidToken` otherwise."""
        return self.claims(token).user_id

    def claims(self, token: str) -> AccessClaims:
        """What a valid token says; raises :class:`InvalidToken` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
            secret = self._verifying.get(header.get("kid", ""))
            if secret is None:
                raise InvalidToken("The token was not issued by this gateway.")
            claims = jwt.decode(
                token,
                secret,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The token has expired. Log in again.") from None
        except jwt.PyJWTError:
            raise InvalidToken("The token is not valid.") from None
        subject = claims.get("sub")
        generation = claims.get("gen", 0)
        expires = claims["exp"]
        if (
            not isinstance(subject, str)
            or not subject
            or type(generation) is not int
            or not isinstance(expires, int | float)
        ):
            raise InvalidToken("The token is not valid.")
        return AccessClaims(subject, generation, int(expires))
