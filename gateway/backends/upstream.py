"""What the upstream HTTP backends share: option checks, credentials, calls, downloads.

Every request a backend sends goes through :class:`Upstream`, which turns each way an
HTTP exchange can fail into an :class:`UpstreamError` (or :class:`UpstreamTimeout`)
whose message is safe to show the client: it never holds the upstream's credentials
or a URL, and at most a short, cleaned excerpt of what the upstream said.

Credentials go only to the API's own URLs. Image downloads carry no credentials, and
API calls do not follow redirects, so a key never travels to another host.

Image URLs come from the upstream's answer, so they are untrusted: they are fetched
through the :class:`~gateway.egress.client.EgressClient` (the egress policy checked at
connect time, redirects re-checked), and whatever goes wrong answers with one fixed
message, :data:`IMAGE_FETCH_FAILED`, that tells nothing about the target; the detail
goes to the log.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from secrets import token_hex
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import orjson

from gateway.backends import h1
from gateway.backends.base import BackendContext, GeneratedImage, ImageRequest, InputImage
from gateway.backends.image_data import (
    MAX_IMAGE_BYTES,
    image_from_base64,
    image_from_bytes,
    image_from_json_string,
)
from gateway.config import ConfigError
from gateway.egress.client import EgressClient, EgressError, redact_url
from gateway.errors import (
    ContentPolicyViolation,
    GatewayError,
    UpstreamError,
    UpstreamRefused,
    UpstreamTimeout,
)
from gateway.media.inspect import MalformedImage, inspect_image

__all__ = [
    "IMAGE_FETCH_FAILED",
    "MAX_IMAGE_BYTES",
    "REFUSED_STATUSES",
    "RETRYABLE_STATUSES",
    "Upstream",
    "basic_auth",
    "call_timeout",
    "env_option",
    "float_option",
    "gather_successes",
    "image_from_base64",
    "image_from_bytes",
    "image_from_json_string",
    "int_option",
    "json_limit",
    "multipart_form",
    "read_secret",
    "refusal",
    "request_headers",
    "retry_after_seconds",
    "same_origin",
    "sanitize",
    "text_option",
    "url_option",
]

log = logging.getLogger("gateway.backends")
T = TypeVar("T")

_MAX_ERROR_BYTES = 64 * 1024
_MAX_MESSAGE_CHARS = 300
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_KEY_LIKE = re.compile(
    r"(?i)(?:bearer|basic)\s+\S+|\bsk-[a-z0-9_-]{8,}|\br8_[a-z0-9]{8,}|\bAIza[0-9a-z_-]{20,}"
)
_MALFORMED = "The image backend sent a malformed response."
#: The one answer to any failed image download: it must not help map the network.
IMAGE_FETCH_FAILED = "The image backend returned an image URL that could not be fetched."


# -- options -------------------------------------------------------------------------


#: Upstream answers that mean "nothing was done; try again".
RETRYABLE_STATUSES = frozenset({429, 502, 503})
#: Upstream answers that blame the request itself (see :class:`UpstreamRefused`).
REFUSED_STATUSES = frozenset({400, 404, 413, 422})
#: Error codes and types by which upstreams say a prompt or image broke their policy.
_POLICY_CODES = frozenset(
    {"content_policy_violation", "moderation_blocked", "image_generation_user_error"}
)
_POLICY_WORDS = re.compile(r"safety system|content polic|moderation|nsfw", re.IGNORECASE)
#: A parameter name an upstream may blame, passed on only if it looks like one.
_PARAM = re.compile(r"[a-z_][a-z0-9_.\[\]]{0,63}")


def retry_after_seconds(value: str | None) -> float | None:
    """An upstream's ``Retry-After`` in seconds (the delta-seconds form only)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def url_option(name: str, options: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """An http(s) base URL without its trailing slash; credentials in it are refused."""
    value = options.get(key, default)
    required = "required, " if default is None else ""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(f"backends.{name}.{key}: {required}an http(s) URL")
    parts = urlsplit(value)
    if not parts.hostname:
        raise ConfigError(f"backends.{name}.{key}: {required}an http(s) URL")
    if parts.username is not None or parts.password is not None:
        # Never echo the value: it holds a credential.
        raise ConfigError(
            f"backends.{name}.{key}: must not hold credentials; name environment variables instead"
        )
    return value.rstrip("/")


def text_option(
    name: str, options: Mapping[str, Any], key: str, default: str | None = None
) -> str | None:
    value = options.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"backends.{name}.{key}: must be a non-empty string")
    return value


def env_option(name: str, options: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    """The name of an environment variable that holds a credential.

    Capitals, digits and ``_`` only: a pasted key (``sk-...``, ``r8_...``) is refused
    without being echoed.
    """
    value = options.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        need = "required, " if required else ""
        raise ConfigError(
            f"backends.{name}.{key}: {need}the name of an environment variable"
            " (capitals, digits, '_') that holds the credential, not the credential itself"
        )
    return value


def int_option(
    name: str, options: Mapping[str, Any], key: str, default: int, *, minimum: int
) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"backends.{name}.{key}: must be a whole number >= {minimum}")
    return value


def float_option(name: str, options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"backends.{name}.{key}: must be a number > 0")
    return float(value)


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP basic auth (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def read_secret(name: str, key: str, env: str, environ: Mapping[str, str] | None = None) -> str:
    """The credential in environment variable ``env`` (of ``environ``, default
    ``os.environ``); :class:`ConfigError` if unset."""
    secret = (os.environ if environ is None else environ).get(env, "").strip()
    if not secret:
        raise ConfigError(f"backends.{name}.{key}: environment variable {env} is not set")
    return secret


# -- small helpers -------------------------------------------------------------------


def call_timeout(timeout_seconds: float) -> float:
    """How long one upstream exchange may take: a little under ``timeout_seconds``.

    The gateway stops waiting for a backend at ``timeout_seconds``; stopping slightly
    earlier lets a backend return the images it already has (a fan-out, a job's cancel).
    """
    return timeout_seconds - min(1.0, timeout_seconds / 10)


def json_limit(n: int) -> int:
    """The largest JSON answer accepted for ``n`` base64-encoded images."""
    return max(1, n) * (MAX_IMAGE_BYTES * 4 // 3) + 1024 * 1024


def multipart_form(
    fields: Sequence[tuple[str, str | int]], files: Sequence[tuple[str, InputImage]]
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text ``fields`` and image ``files`` (field name,
    image), and its content type. The names and file names are the gateway's own (never
    a client's), so they need no escaping."""
    boundary = f"gateway-{token_hex(16)}"
    out = bytearray()
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += f"{value}\r\n".encode()
    for name, image in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}";'
            f' filename="{image.filename}"\r\nContent-Type: {image.media_type}\r\n\r\n'
        ).encode()
        out += image.data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def request_headers(request: ImageRequest) -> dict[str, str]:
    return {"X-Request-ID": request.request_id} if request.request_id else {}


def same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())


def sanitize(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` made safe for a client: no credentials, one line, short."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _KEY_LIKE.sub("[redacted]", text)
    text = "".join(ch for ch in " ".join(text.split()) if ch.isprintable())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    return text


async def gather_successes(name: str, calls: Sequence[Awaitable[T]]) -> list[T]:
    """Run ``calls`` concurrently; the results of those that succeeded, in order.

    Raises the first failure when none succeeded. Cancelling the caller cancels them all.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    successes = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if not successes:
        first = failures[0] if failures else UpstreamError()
        if isinstance(first, GatewayError):
            raise first
        raise UpstreamError() from first
    if failures:
        log.warning("backend %s: %d of %d upstream calls failed", name, len(failures), len(calls))
    return successes


def refusal(detail: str | None, payload: Any = None) -> UpstreamRefused:
    """The client's 4xx for an upstream that refused the request itself.

    ``content_policy_violation`` when the upstream's error code or words say the prompt
    or image broke its policy; otherwise ``invalid_request``, naming the parameter the
    upstream blamed when it names one.
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    codes = {error.get("code"), error.get("type")}
    param = error.get("param")
    param = param if isinstance(param, str) and _PARAM.fullmatch(param) else None
    if codes & _POLICY_CODES or (detail and _POLICY_WORDS.search(detail)):
        return ContentPolicyViolation(
            "The image backend refused the request under its content policy"
            + (f": {detail}" if detail else "."),
            param=param,
        )
    return UpstreamRefused(
        "The image backend refused the request" + (f": {detail}" if detail else "."),
        param=param,
    )


def _error_detail(payload: Any) -> str | None:
    """The upstream's own words from an error body: OpenAI, Google, FastAPI, RFC 7807."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    detail = payload.get("detail")
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list):  # FastAPI validation errors
        messages = [
            d["msg"] for d in detail if isinstance(d, dict) and isinstance(d.get("msg"), str)
        ]
        return "; ".join(messages) or None
    title = payload.get("title")
    return title if isinstance(title, str) and title else None


# -- the upstream --------------------------------------------------------------------


class Upstream:
    """One upstream API as a backend sees it: the shared clients, credentials, deadline.

    API calls go through the gateway's lean HTTP/1.1 client (:mod:`gateway.backends.h1`);
    image downloads, which follow redirects, through the egress client.

    Args:
        context: What the gateway lends the backend (its HTTP clients).
        name: The backend's name, for logs.
        timeout_seconds: The backend's ``timeout_seconds``; each exchange gets
            :func:`call_timeout` of it.
        headers: Sent with every API call (credentials go here), never with downloads.
        secrets: Strings to redact from anything the upstream says.
        credentials_rejected: Tells from an error body that the credentials were
            refused, for upstreams that say so with a status other than 401/403.
    """

    def __init__(
        self,
        context: BackendContext,
        *,
        name: str,
        timeout_seconds: float,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        credentials_rejected: Callable[[Any], bool] | None = None,
    ) -> None:
        if context.api is None or context.egress is None:
            raise ValueError("BackendContext needs its HTTP clients (api and egress)")
        self._api: h1.Client = context.api
        self._egress: EgressClient = context.egress
        self._name = name
        self._timeout = call_timeout(timeout_seconds)
        self._headers = dict(headers or {})
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._secrets = tuple(s for s in secrets if s)
        self._credentials_rejected = credentials_rejected

    def sanitize(self, text: str) -> str:
        return sanitize(text, self._secrets)

    @property
    def headers(self) -> Mapping[str, str]:
        """What every API call carries (credentials included): never log it."""
        return self._headers

    async def call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content: tuple[bytes, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = 1024 * 1024,
        max_seconds: float | None = None,
        decode: Callable[[bytes | bytearray], Any] | None = None,
    ) -> Any:
        """Send one API request; the JSON document of its 2xx answer.

        ``body`` is sent as JSON; ``content``, ``(bytes, content type)``, as it is (a
        multipart form, :func:`multipart_form`). With ``decode``, the answer is decoded
        by it (a msgspec decoding, whose types may keep ``msgspec.Raw`` views of the
        answer's buffer); without, as plain JSON.

        Raises:
            UpstreamError: the upstream could not be reached, answered with another
                status, or sent something other than JSON. ``retryable`` (with the
                upstream's ``Retry-After``) when nothing was done: a connection error,
                or HTTP 429/502/503.
            UpstreamTimeout: no full answer within the exchange's time.
        """
        timeout = self._timeout
        if max_seconds is not None and max_seconds < timeout:
            timeout = max_seconds
        data: bytes | None = None
        if body is not None:  # orjson: several times faster than the stdlib's json
            data = orjson.dumps(body)
            all_headers = self._json_headers
        elif content is not None:
            data = content[0]
            all_headers = {**self._headers, "Content-Type": content[1]}
        else:
            all_headers = self._headers
        if headers:
            all_headers = {**all_headers, **headers}
        try:
            response = await self._api.request(
                method,
                url,
                headers=all_headers,
                body=data,
                max_bytes=max_bytes,
                max_seconds=timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout() from None
        except h1.ResponseTooLarge:
            raise UpstreamError("The image backend sent a response that is too large.") from None
        except h1.ClientError as exc:
            raise UpstreamError(
                f"The image backend could not be reached ({type(exc).__name__}).",
                retryable=isinstance(exc, h1.ConnectError | h1.ConnectionClosed),
            ) from None
        except ValueError:  # a header the request line cannot carry
            raise UpstreamError("The request could not be sent to the image backend.") from None
        if not 200 <= response.status < 300:
            raise self.status_error(response)
        try:
            if decode is not None:
                return decode(response.body)
            return orjson.loads(response.body)
        except (orjson.JSONDecodeError, msgspec.DecodeError):
            raise UpstreamError(_MALFORMED) from None

    async def download_image(
        self, url: Any, *, revised_prompt: str | None = None
    ) -> GeneratedImage:
        """Fetch an image the upstream points at (http(s) or a ``data:`` URL).

        No credentials are sent; at most :data:`MAX_IMAGE_BYTES` are read; the egress
        policy decides where the connection may go.

        Raises:
            UpstreamError: with :data:`IMAGE_FETCH_FAILED`, whatever went wrong (a
                refused address or redirect, a connection error, a timeout, a status
                other than 200, too large, not a well-formed image); the log says
                what, without the URL's query.
        """
        if not isinstance(url, str):
            raise UpstreamError(_MALFORMED)
        if url.startswith("data:"):
            return image_from_base64(url, revised_prompt=revised_prompt)
        try:
            response = await self._egress.get(
                url, max_bytes=MAX_IMAGE_BYTES, max_seconds=self._timeout
            )
            if response.status != 200:
                raise EgressError(f"HTTP {response.status}")
            inspect_image(response.body)
        except (EgressError, MalformedImage) as exc:
            reason = self.sanitize(str(exc))
        except Exception as exc:  # one answer for any failure; the class name is enough
            reason = f"unexpected {type(exc).__name__}"
        else:
            return image_from_bytes(response.body, revised_prompt=revised_prompt)
        log.warning(
            "backend %s: image download from %s failed: %s", self._name, redact_url(url), reason
        )
        raise UpstreamError(IMAGE_FETCH_FAILED)

    def status_error(self, response: h1.Response) -> UpstreamError | UpstreamRefused:
        """The error for an API answer that is not 2xx (see the module's docstring)."""
        status = response.status
        try:
            payload: Any = orjson.loads(response.body[:_MAX_ERROR_BYTES])
        except orjson.JSONDecodeError:
            payload = None
        detail = _error_detail(payload)
        detail = self.sanitize(detail) if detail else None
        log.warning("backend %s: upstream answered HTTP %s: %s", self._name, status, detail or "-")
        rejected = self._credentials_rejected is not None and self._credentials_rejected(payload)
        if status in (401, 403) or rejected:
            # The operator's problem, not the client's: loud, and a 502 that counts.
            log.error(
                "backend %s: the upstream refused the gateway's credentials (HTTP %s); "
                "check the backend's api_key_env",
                self._name,
                status,
            )
            return UpstreamError("The image backend rejected the gateway's credentials.")
        if status in RETRYABLE_STATUSES:  # nothing was done: the caller may try again
            return UpstreamError(
                f"The image backend answered with HTTP {status}.",
                retryable=True,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        if status in REFUSED_STATUSES:
            return refusal(detail, payload)
        if 400 <= status < 500:
            if detail:
                return UpstreamError(f"The image backend refused the request: {detail}")
            return UpstreamError(f"The image backend refused the request (HTTP {status}).")
        return UpstreamError(f"The image backend answered with HTTP {status}.")
