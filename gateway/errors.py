"""Domain errors. The core raises these; only the HTTP edge turns them into responses.

Each error carries the OpenAI-style ``code`` and ``type``, the HTTP status, and
optionally the request parameter at fault and extra response headers.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "AccountDisabled",
    "ApiKeyExpired",
    "ApiKeyRevoked",
    "ClientClosedRequest",
    "ContentPolicyViolation",
    "DailyQuotaExceeded",
    "EmailTaken",
    "GatewayError",
    "IdempotencyKeyInUse",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "InvalidApiKey",
    "InvalidCredentials",
    "InvalidRequest",
    "InvalidResetToken",
    "InvalidSignature",
    "InvalidToken",
    "KeyAlreadyRotated",
    "MissingApiKey",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RateLimitExceeded",
    "RequestTimeout",
    "ServiceUnavailable",
    "StorageUnavailable",
    "TooManyKeys",
    "UpstreamError",
    "UpstreamRefused",
    "UpstreamTimeout",
    "UrlExpired",
    "WrongPassword",
]


class GatewayError(Exception):
    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"
    default_message: str = "The server had an error while processing your request."

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})


class InvalidRequest(GatewayError):
    status, code, type = 400, "invalid_request", "invalid_request_error"
    default_message = "The request is invalid."


class RequestTimeout(GatewayError):
    status, code, type = 408, "request_timeout", "invalid_request_error"
    default_message = "The request body did not arrive in time."


class ClientClosedRequest(GatewayError):
    """The client went away before its request was read; nobody sees the answer."""

    status, code, type = 400, "client_closed_request", "invalid_request_error"
    default_message = "The connection closed before the request body was complete."


class PayloadTooLarge(GatewayError):
    status, code, type = 413, "payload_too_large", "invalid_request_error"
    default_message = "The request body is too large."


class MissingApiKey(GatewayError):
    status, code, type = 401, "missing_api_key", "authentication_error"
    default_message = (
        "No API key provided. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
    )


class InvalidApiKey(GatewayError):
    status, code, type = 401, "invalid_api_key", "authentication_error"
    default_message = "The API key is not valid."


class ApiKeyRevoked(GatewayError):
    status, code, type = 401, "api_key_revoked", "authentication_error"
    default_message = "The API key has been revoked."


class ApiKeyExpired(GatewayError):
    status, code, type = 401, "api_key_expired", "authentication_error"
    default_message = "The API key has expired."


class AccountDisabled(GatewayError):
    status, code, type = 403, "account_disabled", "permission_error"
    default_message = "The account that owns this API key is disabled."


class NotFound(GatewayError):
    status, code, type = 404, "not_found", "invalid_request_error"
    default_message = "Not found."


class ModelNotFound(GatewayError):
    status, code, type = 404, "model_not_found", "invalid_request_error"
    default_message = "The model does not exist."


class RateLimitExceeded(GatewayError):
    status, code, type = 429, "rate_limit_exceeded", "rate_limit_error"
    default_message = "Rate limit exceeded: too many requests in the last minute."


class DailyQuotaExceeded(GatewayError):
    status, code, type = 429, "daily_quota_exceeded", "rate_limit_error"
    default_message = "Daily image quota exceeded."


class InsufficientCredits(GatewayError):
    """The user's credits (this month's allowance and purchased ones) do not cover it."""

    status, code, type = 402, "insufficient_credits", "insufficient_quota"
    default_message = "Not enough credits for this request."


class UpstreamError(GatewayError):
    status, code, type = 502, "upstream_error", "server_error"
    default_message = "The image backend failed to produce images."

    def __init__(
        self,
        message: str | None = None,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """``retryable``: safe to try again (nothing was produced: a connection error,
        or an upstream 429/502/503); ``retry_after``: what the upstream asked for."""
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class UpstreamRefused(GatewayError):
    """The upstream refused the request as the request's own fault.

    An upstream 400/404/413/422: the client gets a 400 in OpenAI's shape with the
    upstream's (sanitised) reason, naming the parameter the upstream blamed. It is not
    retried, not counted by the circuit breaker (the upstream is healthy) and not sent
    to a fallback backend (another backend would make a different image than asked for).
    """

    status, code, type = 400, "invalid_request", "invalid_request_error"
    default_message = "The image backend refused the request."


class ContentPolicyViolation(UpstreamRefused):
    """The upstream refused the prompt or image under its content policy."""

    code = "content_policy_violation"
    default_message = "The image backend refused the request under its content policy."


class UpstreamTimeout(GatewayError):
    status, code, type = 504, "upstream_timeout", "server_error"
    default_message = "The image backend did not answer in time."


class ServiceUnavailable(GatewayError):
    status, code, type = 503, "service_unavailable", "server_error"
    default_message = "The service is temporarily unavailable. Please retry."


class InvalidCredentials(GatewayError):
    status, code, type = 401, "invalid_credentials", "authentication_error"
    default_message = "The email or password is not correct."


class InvalidToken(GatewayError):
    status, code, type = 401, "invalid_token", "authentication_error"
    default_message = "A valid 'Authorization: Bearer <token>' header is required."


class WrongPassword(GatewayError):
    """A signed-in user's ``current_password`` is not the account's password."""

    status, code, type = 403, "wrong_password", "permission_error"
    default_message = "The current password is not correct."


class InvalidResetToken(GatewayError):
    """A password-reset link that is unknown, used already or expired."""

    status, code, type = 400, "invalid_reset_token", "invalid_request_error"
    default_message = "This password-reset link is not valid: it was used, or it expired."


class EmailTaken(GatewayError):
    status, code, type = 409, "email_taken", "invalid_request_error"
    default_message = "An account with this email already exists."


class KeyAlreadyRotated(GatewayError):
    status, code, type = 409, "key_already_rotated", "invalid_request_error"
    default_message = "This key was already rotated."


class TooManyKeys(GatewayError):
    status, code, type = 409, "too_many_keys", "invalid_request_error"
    default_message = "This account has the maximum number of active API keys."


class InvalidSignature(GatewayError):
    """A file link whose signature is missing, malformed or does not match."""

    status, code, type = 403, "invalid_signature", "invalid_request_error"
    default_message = "The link's signature is not valid."


class UrlExpired(GatewayError):
    """A correctly signed file link past its ``expires`` time."""

    status, code, type = 403, "url_expired", "invalid_request_error"
    default_message = "The link has expired. Request the image again for a new link."


class RangeNotSatisfiable(GatewayError):
    """A ``Range`` that selects no byte of the file; carries ``Content-Range: bytes */size``."""

    status, code, type = 416, "range_not_satisfiable", "invalid_request_error"
    default_message = "The requested range is not satisfiable."

    def __init__(self, size: int) -> None:
        super().__init__(
            f"The requested range is not satisfiable: the file has {size} bytes.",
            headers={"Content-Range": f"bytes */{size}"},
        )
        self.size = size


class StorageUnavailable(GatewayError):
    """The object store could not be reached or failed; nothing was stored or read."""

    status, code, type = 503, "storage_unavailable", "server_error"
    default_message = "The file store is temporarily unavailable. Please retry."


class IdempotencyKeyInUse(GatewayError):
    """A request with this Idempotency-Key is still running."""

    status, code, type = 409, "idempotency_key_in_use", "invalid_request_error"
    default_message = (
        "A request with this Idempotency-Key is still being processed. Retry after it ends."
    )


class IdempotencyKeyReused(GatewayError):
    """The Idempotency-Key was used for a different request."""

    status, code, type = 422, "idempotency_key_reused", "invalid_request_error"
    default_message = (
        "This Idempotency-Key was used with a different request (method, path or body). "
        "Use a new key for a new request."
    )
