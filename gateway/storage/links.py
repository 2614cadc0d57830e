"""Signed, expiring links to stored files: the link is the credential.

``GET /v1/files/{file_id}?expires=<unix>&signature=<sig>``, where ``sig`` is
HMAC-SHA256 over ``"{file_id}:{expires}"`` with the first of ``storage.signing_secrets``,
base64url without padding. Every secret verifies, so a secret is rotated by putting the
new one first and dropping the old one after ``storage.url_ttl_seconds``. No API key is
needed to follow a link, so it works in an ``<img src>``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from gateway import errors
from gateway.storage.base import FileStore

__all__ = ["FILES_PATH", "FileLink", "FileLinks", "LinkSigner"]

#: Where the gateway serves files (the route is ``FILES_PATH + "/{file_id}"``).
FILES_PATH = "/v1/files"
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url, no padding
_EXPIRES = re.compile(r"[0-9]{1,12}")
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LinkSigner:
    """Signs and verifies ``(file_id, expires)`` pairs; ``secrets[0]`` signs, all verify."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is required")
        self._secrets = tuple(secrets)

    def signature(self, file_id: str, expires: int) -> str:
        return _sign(self._secrets[0], file_id, expires)

    def verify(self, file_id: str, expires: str | None, signature: str | None, now: float) -> int:
        """The link's expiry (unix seconds) if it is genuine and not past.

        Raises:
            InvalidSignature: ``expires`` or ``signature`` is missing or malformed, or the
                signature matches none of the secrets (any part of the link was changed).
            UrlExpired: the signature is right but ``now`` is past ``expires``.
        """
        if (
            expires is None
            or signature is None
            or not _EXPIRES.fullmatch(expires)
            or not _SIGNATURE.fullmatch(signature)
        ):
            raise errors.InvalidSignature()
        when = int(expires)
        given = signature.encode()
        valid = False
        for secret in self._secrets:  # every one, so timing does not say which matched
            valid |= hmac.compare_digest(_sign(secret, file_id, when).encode(), given)
        if not valid:
            raise errors.InvalidSignature()
        if now >= when:
            raise errors.UrlExpired()
        return when


@dataclass(frozen=True, slots=True)
class FileLink:
    """A link to a stored file and when it stops working."""

    url: str
    expires_at: int


class FileLinks:
    """Builds the links clients get for stored files.

    Args:
        signer: signs the gateway's own links.
        ttl_seconds: how long a link works.
        public_base_url: how clients reach the gateway (``https://img.example.com``);
            empty: each request's own scheme and host.
        trusted_proxies: peers (addresses or CIDRs) whose ``X-Forwarded-Proto`` and
            ``X-Forwarded-Host`` are believed when ``public_base_url`` is empty.
        store: the store, for presigned links.
        presign: links are the store's own presigned GET URLs (S3).
    """

    def __init__(
        self,
        signer: LinkSigner,
        *,
        ttl_seconds: int,
        public_base_url: str = "",
        trusted_proxies: Sequence[str] = (),
        store: FileStore | None = None,
        presign: bool = False,
    ) -> None:
        self.signer = signer
        self.ttl_seconds = ttl_seconds
        self._public = public_base_url.rstrip("/")
        self._trusted: list[Network] = [
            ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies
        ]
        self._store = store
        self._presign = presign

    def sign_url(self, file_id: str, now: float, base_url: str) -> str:
        """The gateway's link to ``file_id``, working until ``now + ttl_seconds``."""
        expires = int(now) + self.ttl_seconds
        signature = self.signer.signature(file_id, expires)
        return (
            f"{base_url.rstrip('/')}{FILES_PATH}/{quote(file_id)}"
            f"?expires={expires}&signature={signature}"
        )

    def base_url(self, request: web.Request | None) -> str:
        """``public_base_url``, else the request's scheme and host (as the nearest proxy
        reports them in ``X-Forwarded-Proto``/``-Host``, if it is a trusted one).

        Raises:
            InvalidRequest: no ``public_base_url`` and the request's host is not a host.
        """
        if self._public:
            return self._public
        if request is None:
            raise ValueError("a request is needed when storage.public_base_url is empty")
        scheme, host = request.scheme, request.host
        if self._is_trusted(request.remote):
            scheme = _last(request.headers.getall("X-Forwarded-Proto", [])) or scheme
            host = _last(request.headers.getall("X-Forwarded-Host", [])) or host
        if scheme not in ("http", "https") or not _HOST.fullmatch(host):
            raise errors.InvalidRequest("The request's Host header is not a valid host.")
        return f"{scheme}://{host}"

    async def link(
        self, file_id: str, *, now: float, request: web.Request | None = None
    ) -> FileLink:
        """The link a client gets for ``file_id``: the store's presigned URL with
        ``presign``, else the gateway's signed link (:meth:`sign_url`)."""
        expires = int(now) + self.ttl_seconds
        if self._presign and self._store is not None:
            url = await self._store.presign(file_id, dt.timedelta(seconds=self.ttl_seconds))
            return FileLink(url, expires)
        return FileLink(self.sign_url(file_id, now, self.base_url(request)), expires)

    def _is_trusted(self, address: str | None) -> bool:
        if not self._trusted or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)


def _sign(secret: bytes, file_id: str, expires: int) -> str:
    digest = hmac.new(secret, f"{file_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _last(values: Sequence[str]) -> str:
    """The value the nearest proxy set: the last of a comma-separated header."""
    hops = [hop.strip() for line in values for hop in line.split(",") if hop.strip()]
    return hops[-1].lower() if hops else ""
