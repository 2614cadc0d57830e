"""The HTTP client for requests made on behalf of untrusted data.

:class:`EgressClient` is what the gateway uses to fetch a URL that someone else chose
(an image URL in an upstream's answer; a webhook URL, later). It keeps to an
:class:`~gateway.egress.policy.EgressPolicy`:

* **At connect time.** Every socket is made by the policy's socket factory, which
  sees the exact address it is about to connect to and refuses it unless the policy
  permits it. That is after DNS: a name that resolves to a public address for a
  check and to 127.0.0.1 for the connection (DNS rebinding) is still refused, and
  so are IP-literal hosts, which aiohttp connects to without asking its resolver.
  Names on the allow-list go through a second session of their own, without the
  address check: the operator trusts wherever they resolve.
* **Only http and https**, and no credentials in the URL.
* **Redirects by hand**: at most ``max_redirects`` (3), each target checked again
  like the first.
* **Bounded**: a whole exchange, redirects included, ends within ``max_seconds``; at most
  ``max_bytes`` of the body are read.
* **Nothing carried over**: no cookie jar, no proxy from the environment.

Every failure (refusal, connection error, timeout, too many redirects, a body too
large) is an :class:`EgressError` whose message is for the operator's log: it may name
the target's address, so it must never reach a client. Callers answer with one fixed
message instead (see :meth:`gateway.backends.upstream.Upstream.download_image`).

Create the client inside a running event loop; :meth:`EgressClient.close` it.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohappyeyeballs import AddrInfoType
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.backends.buffers import body_buffer
from gateway.egress.policy import EgressPolicy

__all__ = [
    "MAX_REDIRECTS",
    "EgressClient",
    "EgressError",
    "EgressRefused",
    "EgressResponse",
    "redact_url",
]

#: Redirects followed at most, each one checked like the first URL.
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Headers never carried to another origin on a redirect.
_ORIGIN_BOUND = frozenset({"authorization", "cookie", "proxy-authorization"})
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})
_REFUSED_MARK = "egress policy refuses"
_MAX_LOGGED_URL = 200


class EgressRefused(PermissionError):
    """Raised by the socket factory for an address the policy does not permit."""


class EgressError(Exception):
    """A request on behalf of untrusted data failed or was refused.

    The message is for the operator's log only: it may name the target's address.
    ``refused`` is True when the policy (not the network) stopped it.
    """

    def __init__(self, reason: str, *, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused


@dataclass(frozen=True, slots=True)
class EgressResponse:
    """The answer at the end of the redirects: any status, the body read in full."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes | bytearray
    #: Where the answer came from (after redirects).
    url: URL


def redact_url(url: str | URL) -> str:
    """``url`` as it may be logged: no user, password, query or fragment; short."""
    try:
        parsed = URL(url) if isinstance(url, str) else url
        if parsed.absolute:
            parsed = parsed.with_user(None).with_password(None)
        text = str(parsed.with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<not a URL>"
    return text if len(text) <= _MAX_LOGGED_URL else text[: _MAX_LOGGED_URL - 1] + "…"


class EgressClient:
    """Fetches URLs chosen by untrusted parties, within an :class:`EgressPolicy`.

    Args:
        policy: Where connections may go.
        limit: Connections held open at most (per session), as ``TCPConnector``'s.
        limit_per_host: ... and per host (0: no cap).
        resolver: The DNS resolver (default: aiohttp's); tests inject one.
        max_redirects: Redirects followed at most.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        limit: int = 100,
        limit_per_host: int = 0,
        resolver: aiohttp.abc.AbstractResolver | None = None,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        self.policy = policy
        self._max_redirects = max_redirects
        self._strict = self._session(
            aiohttp.TCPConnector(
                limit=limit,
                limit_per_host=limit_per_host,
                resolver=resolver,
                socket_factory=self._socket,
            )
        )
        # Allow-listed names connect wherever they resolve: a pool of their own, so
        # that no connection made for them is ever reused for another name.
        self._named: aiohttp.ClientSession | None = None
        if policy.names:
            self._named = self._session(
                aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host, resolver=resolver)
            )

    @staticmethod
    def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),  # each request brings its own
            trust_env=False,
            headers={"User-Agent": "image-gateway"},
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The policy-bound session itself, for code that needs a raw ``aiohttp``
        session: every connection it opens is checked, but redirects it follows are
        not limited to ``max_redirects``, and allow-listed names are refused."""
        return self._strict

    def _socket(self, addr_info: AddrInfoType) -> socket.socket:
        """The socket for one connection attempt; :class:`EgressRefused` if the
        address it would connect to is not permitted."""
        family, type_, proto, _, address = addr_info
        host = str(address[0])
        reason = self.policy.refusal(host)
        if reason is not None:
            raise EgressRefused(errno.EACCES, f"{_REFUSED_MARK} {host} ({reason})")
        return socket.socket(family=family, type=type_, proto=proto)

    async def close(self) -> None:
        await self._strict.close()
        if self._named is not None:
            await self._named.close()

    async def get(self, url: str, *, max_bytes: int, max_seconds: float) -> EgressResponse:
        """``GET url``; see :meth:`request`."""
        return await self.request("GET", url, max_bytes=max_bytes, max_seconds=max_seconds)

    async def request(
        self,
        method: str,
        url: str,
        *,
        max_bytes: int,
        max_seconds: float,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> EgressResponse:
        """Send one request, following redirects; the final answer, whatever its status.

        A 301/302 answer to a POST and any 303 are followed with a GET without the
        body (as browsers do); 307/308 repeat the request. Credential headers are not
        carried to another origin.

        Raises:
            EgressError: the URL or a redirect's target is refused, more than
                ``max_redirects`` redirects, no connection, no full answer within
                ``max_seconds``, or a body over ``max_bytes``.
        """
        try:
            async with asyncio.timeout(max_seconds):
                return await self._follow(method, url, headers or {}, body, max_bytes)
        except TimeoutError:
            raise EgressError(f"no full answer within {max_seconds:g} s") from None

    async def _follow(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        max_bytes: int,
    ) -> EgressResponse:
        target = self.check_url(url)
        hops = 0
        while True:
            host = target.raw_host or ""
            named = self._named is not None and self.policy.allows_name(host)
            session = self._named if named and self._named is not None else self._strict
            try:
                async with session.request(
                    method, target, headers=headers, data=body, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status not in _REDIRECTS or location is None:
                        data = await _read_limited(response, max_bytes)
                        return EgressResponse(response.status, response.headers, data, target)
            except aiohttp.ClientConnectorError as exc:
                refused = _REFUSED_MARK in str(exc.os_error)
                raise EgressError(
                    f"cannot connect to {host}:{target.port}: {exc.os_error}", refused=refused
                ) from None
            except aiohttp.ClientError as exc:
                raise EgressError(f"{type(exc).__name__} from {host}:{target.port}") from None
            hops += 1
            if hops > self._max_redirects:
                raise EgressError(f"more than {self._max_redirects} redirects")
            following = self.check_url(_join(target, location))
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method = "HEAD" if method == "HEAD" else "GET"
                body = None
                headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
            if following.origin() != target.origin():
                headers = {k: v for k, v in headers.items() if k.lower() not in _ORIGIN_BOUND}
            target = following

    def check_url(self, url: str | URL) -> URL:
        """``url``, parsed, if it may be requested; :class:`EgressError` if not.

        Only the URL is checked here (scheme, host, no credentials; an IP-literal host
        against the policy): the address a name resolves to is checked when
        connecting, so passing this is no promise that a request will be let through.
        Useful to refuse a bad URL early (a webhook URL when it is registered).
        """
        if isinstance(url, str):
            url = _parse(url)
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise EgressError(f"not an http(s) URL: {redact_url(url)}", refused=True)
        if url.raw_user is not None or url.raw_password is not None:
            raise EgressError(f"credentials in the URL: {redact_url(url)}", refused=True)
        host = url.raw_host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return url
        reason = self.policy.refusal(host)
        if reason is not None:
            raise EgressError(f"{_REFUSED_MARK} {host} ({reason})", refused=True)
        return url


def _parse(url: str) -> URL:
    try:
        return URL(url)
    except (ValueError, TypeError):
        raise EgressError("not a valid URL", refused=True) from None


def _join(base: URL, location: str) -> URL:
    """Where a redirect's ``Location`` points, relative to ``base``."""
    try:
        return base.join(URL(location))
    except (ValueError, TypeError):
        raise EgressError("a redirect to something that is not a URL", refused=True) from None


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytearray:
    """The body in one buffer: sized from ``Content-Length`` when there is one (and no
    content coding, which aiohttp undoes), grown otherwise; each piece copied in as it
    arrives, the limit enforced as it does, never a list of pieces joined at the end. A
    sized buffer is not zeroed first (:mod:`gateway.backends.buffers`): it is returned only
    once every announced byte is in it."""
    announced = response.content_length
    if announced is not None and announced > limit:
        raise EgressError(f"answer of {announced} bytes, over {limit}")
    coded = "Content-Encoding" in response.headers  # aiohttp undoes it: size unknown
    body = body_buffer(0 if coded else announced or 0)
    size = 0
    async for piece in response.content.iter_any():
        end = size + len(piece)
        if end > limit:
            raise EgressError(f"answer over {limit} bytes")
        body[size:end] = piece
        size = end
    if size != len(body):  # aiohttp raises first when a sized body is cut short
        raise EgressError(f"answer of {size} bytes, {len(body)} announced")
    return body
