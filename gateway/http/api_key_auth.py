"""API key authentication for the data plane."""

from __future__ import annotations

from aiohttp import web

from gateway import errors
from gateway.keys.cache import KeyCache, KeyRecord
from gateway.keys.format import key_digest, parse_key

__all__ = ["authenticate", "key_from_headers"]

_QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "api-key", "key", "access_token"})


def _refuse_keys_in_url(request: web.Request, key_prefix: str) -> None:
    for name, value in request.query.items():
        if name.lower() in _QUERY_KEY_NAMES or value.startswith(key_prefix):
            raise errors.InvalidRequest(
                "API keys are not accepted in the URL, where they end up in logs. "
                "Send the key in the Authorization header.",
                param="api_key",
            )


def key_from_headers(request: web.Request, key_prefix: str) -> str:
    """The API key sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

    Two different keys in one request are refused rather than one picked silently.
    """
    if request.query_string:
        _refuse_keys_in_url(request, key_prefix)
    keys = set()
    for header in request.headers.getall("Authorization", ()):
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise errors.InvalidApiKey("The Authorization header must be 'Bearer <key>'.")
        keys.add(value.strip())
    keys.update(v.strip() for v in request.headers.getall("X-API-Key", ()) if v.strip())
    if len(keys) > 1:
        raise errors.InvalidRequest(
            "More than one API key was sent; send exactly one.", param="Authorization"
        )
    if not keys:
        raise errors.MissingApiKey()
    return keys.pop()


async def authenticate(
    request: web.Request, cache: KeyCache, key_prefix: str, now: float
) -> KeyRecord:
    """The caller's key record; raises the 401/403 error that says what is wrong with it.

    A malformed key is refused before any lookup. Redis or Postgres being unreachable
    is a 503 (fail closed).
    """
    key = key_from_headers(request, key_prefix)
    # A key this process holds needs no format check: only a real key hashes to it.
    record = cache.cached(key_digest(key))
    if record is None:
        parsed = parse_key(key, key_prefix)
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
