"""API key authentication for the data plane."""

from __future__ import annotations

from aiohttp import web

from gateway import errors
from gateway.keys.cache import KeyCache, KeyRecord
from gateway.keys.format import parse_key

__all__ = ["authenticate", "key_from_headers"]

_QUERY_KEY_NAMES = ("api_key", "apikey", "key", "access_token")


def key_from_headers(request: web.Request) -> str:
    """The API key sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if any(name in request.query for name in _QUERY_KEY_NAMES):
        raise errors.InvalidRequest(
            "API keys are not accepted in the URL, where they end up in logs. "
            "Send the key in the Authorization header.",
            param="api_key",
        )
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise errors.InvalidApiKey("The Authorization header must be 'Bearer <key>'.")
    value = request.headers.get("X-API-Key", "").strip()
    if value:
        return value
    raise errors.MissingApiKey()


async def authenticate(
    request: web.Request, cache: KeyCache, key_prefix: str, now: float
) -> KeyRecord:
    """The caller's key record; raises the 401/403 error that says what is wrong with it.

    A malformed key is refused before any lookup. Redis or Postgres being unreachable
    is a 503 (fail closed).
    """
    parsed = parse_key(key_from_headers(request), key_prefix)
    if parsed is None:
        raise errors.InvalidApiKey()
    try:
        record = await cache.get(parsed.key_hash)
    except Exception as exc:
        raise errors.ServiceUnavailable(
            "The key store is unreachable. Please retry shortly."
        ) from exc
    if record is None:
        raise errors.InvalidApiKey()
    if not record.key_active:
        raise errors.ApiKeyRevoked()
    if record.expires_at is not None and now >= record.expires_at:
        raise errors.ApiKeyExpired()
    if not record.user_active:
        raise errors.AccountDisabled()
    return record
